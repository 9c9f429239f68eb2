/*
 * encrypted_type.c
 *		Input, output, binary send/receive and the bytea cast of "encrypted".
 *
 * Every way in validates the layout as strictly as the others, so a value
 * that is stored is always one the decrypt path can parse, and refuses
 * values over PCAR_MAX_VALUE_BYTES, so that pg_dump can always write one.
 */
#include "postgres.h"

#include <sodium.h>

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/syscache.h"

#include "ciphertext.h"
#include "encrypted_type.h"
#include "pgcrypt_at_rest.h"

PG_FUNCTION_INFO_V1(encrypted_in);
PG_FUNCTION_INFO_V1(encrypted_out);
PG_FUNCTION_INFO_V1(encrypted_recv);
PG_FUNCTION_INFO_V1(encrypted_send);
PG_FUNCTION_INFO_V1(encrypted_from_bytea);

static Encrypted *
encrypted_from_bytes(const uint8 *data, size_t len)
{
	Encrypted  *result = palloc(VARHDRSZ + len);

	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), data, len);
	return result;
}

Datum
encrypted_in(PG_FUNCTION_ARGS)
{
	const char *input = PG_GETARG_CSTRING(0);
	size_t		prefix_len = strlen(PCAR_TEXT_PREFIX);
	const char *b64;
	size_t		b64_len;
	size_t		max_len;
	Encrypted  *result;
	size_t		bin_len;
	const char *b64_end;
	const char *problem;

	if (strncmp(input, PCAR_TEXT_PREFIX, prefix_len) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type %s", "encrypted"),
				 errdetail("An encrypted value starts with \"%s\".", PCAR_TEXT_PREFIX)));

	b64 = input + prefix_len;
	b64_len = strlen(b64);
	max_len = b64_len / 4 * 3 + 3;
	/* refused before decoding: the decoded length is known within 3 bytes */
	if (b64_len / 4 * 3 > PCAR_MAX_VALUE_BYTES)
		pcar_ciphertext_check_size(b64_len / 4 * 3);
	result = palloc(VARHDRSZ + max_len);

	if (sodium_base642bin((unsigned char *) VARDATA(result), max_len,
						  b64, b64_len, NULL, &bin_len, &b64_end,
						  sodium_base64_VARIANT_ORIGINAL) != 0 ||
		b64_end != b64 + b64_len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type %s", "encrypted"),
				 errdetail("The text after \"%s\" is not valid base64.", PCAR_TEXT_PREFIX)));

	pcar_ciphertext_check_size(bin_len);
	problem = pcar_ciphertext_problem((const uint8 *) VARDATA(result), bin_len);
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type %s", "encrypted"),
				 errdetail_internal("%s", problem)));

	SET_VARSIZE(result, VARHDRSZ + bin_len);
	PG_RETURN_ENCRYPTED_P(result);
}

Datum
encrypted_out(PG_FUNCTION_ARGS)
{
	Encrypted  *value = PG_GETARG_ENCRYPTED_P(0);
	size_t		prefix_len = strlen(PCAR_TEXT_PREFIX);
	size_t		b64_size = sodium_base64_ENCODED_LEN(ENCRYPTED_LEN(value),
													 sodium_base64_VARIANT_ORIGINAL);
	char	   *result = palloc(prefix_len + b64_size);

	memcpy(result, PCAR_TEXT_PREFIX, prefix_len);
	sodium_bin2base64(result + prefix_len, b64_size,
					  ENCRYPTED_DATA(value), ENCRYPTED_LEN(value),
					  sodium_base64_VARIANT_ORIGINAL);
	PG_RETURN_CSTRING(result);
}

Datum
encrypted_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			len = buf->len - buf->cursor;
	const uint8 *data = (const uint8 *) pq_getmsgbytes(buf, len);

	pcar_ciphertext_check_input(data, len, ERRCODE_INVALID_BINARY_REPRESENTATION);
	PG_RETURN_ENCRYPTED_P(encrypted_from_bytes(data, len));
}

Datum
encrypted_send(PG_FUNCTION_ARGS)
{
	Encrypted  *value = PG_GETARG_ENCRYPTED_P(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbytes(&buf, (const char *) ENCRYPTED_DATA(value), ENCRYPTED_LEN(value));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* The cast from bytea: the same checks as binary input. */
Datum
encrypted_from_bytea(PG_FUNCTION_ARGS)
{
	bytea	   *raw = PG_GETARG_BYTEA_PP(0);

	pcar_ciphertext_check_input((const uint8 *) VARDATA_ANY(raw), VARSIZE_ANY_EXHDR(raw),
								ERRCODE_INVALID_BINARY_REPRESENTATION);
	PG_RETURN_ENCRYPTED_P(encrypted_from_bytes((const uint8 *) VARDATA_ANY(raw),
											   VARSIZE_ANY_EXHDR(raw)));
}

Oid
pcar_encrypted_type_oid(void)
{
	Oid			schema = get_namespace_oid(PCAR_SCHEMA, true);

	return OidIsValid(schema) ?
		GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("encrypted"),
						ObjectIdGetDatum(schema)) : InvalidOid;
}
