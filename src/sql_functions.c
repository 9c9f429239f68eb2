/*
 * sql_functions.c
 *		Thin SQL-callable wrappers: argument handling and error reporting.
 *		Cryptography is in ciphertext.c, keys in key_cache.c and key_store.c.
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "ciphertext.h"
#include "encrypted_type.h"
#include "key_cache.h"
#include "key_store.h"
#include "pgcrypt_at_rest.h"
#include "server_key.h"
#include "sodium_provider.h"
#include "sql_functions.h"

PG_FUNCTION_INFO_V1(pcar_encrypt_text);
PG_FUNCTION_INFO_V1(pcar_encrypt_bytea);
PG_FUNCTION_INFO_V1(pcar_decrypt);
PG_FUNCTION_INFO_V1(pcar_decrypt_text);
PG_FUNCTION_INFO_V1(pcar_key_id);
PG_FUNCTION_INFO_V1(pcar_create_keyring);
PG_FUNCTION_INFO_V1(pcar_rotate_keyring);
PG_FUNCTION_INFO_V1(pcar_server_public_key_sql);
PG_FUNCTION_INFO_V1(pcar_register_local_server);
PG_FUNCTION_INFO_V1(pcar_invalidate_key_cache);

/*
 * The functions are not STRICT: a NULL value gives NULL, but a NULL keyring
 * or context is an error, lest encrypt(v, 'k', NULL) quietly store NULL.
 */
static void
require_not_null(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_NARGS() > argno && PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
}

/* The optional last argument: the caller's context, bound as associated data. */
static void
get_context(FunctionCallInfo fcinfo, int argno, const uint8 **context, size_t *context_len)
{
	bytea	   *ctx;

	*context = NULL;
	*context_len = 0;
	if (PG_NARGS() <= argno)
		return;
	ctx = PG_GETARG_BYTEA_PP(argno);
	*context = (const uint8 *) VARDATA_ANY(ctx);
	*context_len = VARSIZE_ANY_EXHDR(ctx);
}

static Datum
encrypt_common(FunctionCallInfo fcinfo, const uint8 *plaintext, size_t plaintext_len)
{
	text	   *keyring;
	const uint8 *context;
	size_t		context_len;
	const uint8 *key;
	int32		key_id;
	Encrypted  *result;

	if (plaintext_len > PCAR_MAX_PLAINTEXT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value too long to encrypt"),
				 errdetail("The value is %zu bytes; at most %zu can be encrypted.",
						   plaintext_len, (size_t) PCAR_MAX_PLAINTEXT)));
	keyring = PG_GETARG_TEXT_PP(1);
	get_context(fcinfo, 2, &context, &context_len);
	key_id = pcar_key_cache_active(VARDATA_ANY(keyring), VARSIZE_ANY_EXHDR(keyring), &key);

	result = palloc(VARHDRSZ + PCAR_OVERHEAD + plaintext_len);
	SET_VARSIZE(result, VARHDRSZ + PCAR_OVERHEAD + plaintext_len);
	pcar_ciphertext_seal((uint8 *) VARDATA(result), (uint32) key_id, key,
						 plaintext, plaintext_len, context, context_len);
	PG_RETURN_ENCRYPTED_P(result);
}

Datum
pcar_encrypt_text(PG_FUNCTION_ARGS)
{
	text	   *plaintext;

	require_not_null(fcinfo, 1, "keyring");
	require_not_null(fcinfo, 2, "context");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	plaintext = PG_GETARG_TEXT_PP(0);

	return encrypt_common(fcinfo, (const uint8 *) VARDATA_ANY(plaintext),
						  VARSIZE_ANY_EXHDR(plaintext));
}

Datum
pcar_encrypt_bytea(PG_FUNCTION_ARGS)
{
	bytea	   *plaintext;

	require_not_null(fcinfo, 1, "keyring");
	require_not_null(fcinfo, 2, "context");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	plaintext = PG_GETARG_BYTEA_PP(0);

	return encrypt_common(fcinfo, (const uint8 *) VARDATA_ANY(plaintext),
						  VARSIZE_ANY_EXHDR(plaintext));
}

/* Returns the plaintext as a varlena (bytea and text share the layout). */
static bytea *
decrypt_common(FunctionCallInfo fcinfo)
{
	Encrypted  *value = PG_GETARG_ENCRYPTED_P(0);
	const uint8 *data = ENCRYPTED_DATA(value);
	size_t		len = ENCRYPTED_LEN(value);
	const uint8 *context;
	size_t		context_len;
	int32		key_id;
	const uint8 *key;
	size_t		plaintext_len;
	bytea	   *result;

	/* values are checked on the way in; this guards against a bad binary cast */
	pcar_ciphertext_check(data, len, ERRCODE_INVALID_BINARY_REPRESENTATION);
	get_context(fcinfo, 1, &context, &context_len);
	key_id = (int32) pcar_ciphertext_key_id(data);
	key = pcar_key_cache_get(key_id);

	plaintext_len = pcar_ciphertext_plaintext_len(len);
	result = palloc(VARHDRSZ + plaintext_len);
	SET_VARSIZE(result, VARHDRSZ + plaintext_len);
	if (!pcar_ciphertext_open((uint8 *) VARDATA(result), data, len, key,
							  context, context_len))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decrypt a value under key %d", key_id),
				 errdetail("The value was altered, or the context given differs from the one it was encrypted with."),
				 errhint("Pass the same context that was used to encrypt the value.")));
	return result;
}

Datum
pcar_decrypt(PG_FUNCTION_ARGS)
{
	require_not_null(fcinfo, 1, "context");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(decrypt_common(fcinfo));
}

Datum
pcar_decrypt_text(PG_FUNCTION_ARGS)
{
	bytea	   *plaintext;

	require_not_null(fcinfo, 1, "context");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	plaintext = decrypt_common(fcinfo);

	/* noError: the standard message would quote plaintext bytes */
	if (!pg_verify_mbstr(GetDatabaseEncoding(), VARDATA(plaintext),
						 VARSIZE(plaintext) - VARHDRSZ, true))
	{
		pcar_wipe(VARDATA(plaintext), VARSIZE(plaintext) - VARHDRSZ);
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("decrypted value is not valid text in encoding \"%s\"",
						GetDatabaseEncodingName()),
				 errhint("Use pgcrypt_at_rest.decrypt() to get the value as bytea.")));
	}
	PG_RETURN_TEXT_P((text *) plaintext);
}

Datum
pcar_key_id(PG_FUNCTION_ARGS)
{
	Encrypted  *value = (Encrypted *) PG_DETOAST_DATUM_SLICE(PG_GETARG_DATUM(0), 0,
															  PCAR_HEADER_BYTES);

	/* only the header is read; it is checked as strictly as a whole value */
	if (ENCRYPTED_LEN(value) < PCAR_HEADER_BYTES ||
		ENCRYPTED_DATA(value)[0] != PCAR_VERSION_XCHACHA20POLY1305)
		pcar_ciphertext_check(ENCRYPTED_DATA(value), ENCRYPTED_LEN(value),
							  ERRCODE_INVALID_BINARY_REPRESENTATION);
	PG_RETURN_INT32((int32) pcar_ciphertext_key_id(ENCRYPTED_DATA(value)));
}

static char *
keyring_name_arg(FunctionCallInfo fcinfo)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (name[0] == '\0' || strlen(name) > PCAR_MAX_KEYRING_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid keyring name"),
				 errdetail("A keyring name is 1 to %d bytes long.", PCAR_MAX_KEYRING_NAME)));
	return name;
}

Datum
pcar_create_keyring(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(pcar_store_create_keyring(keyring_name_arg(fcinfo)));
}

Datum
pcar_rotate_keyring(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(pcar_store_rotate_keyring(keyring_name_arg(fcinfo)));
}

Datum
pcar_server_public_key_sql(PG_FUNCTION_ARGS)
{
	bytea	   *result = palloc(VARHDRSZ + PCAR_SERVER_KEY_BYTES);

	pcar_server_key_require();
	SET_VARSIZE(result, VARHDRSZ + PCAR_SERVER_KEY_BYTES);
	memcpy(VARDATA(result), pcar_server_public_key(), PCAR_SERVER_KEY_BYTES);
	PG_RETURN_BYTEA_P(result);
}

/* Called by the install script. */
Datum
pcar_register_local_server(PG_FUNCTION_ARGS)
{
	pcar_store_register_local_server();
	PG_RETURN_VOID();
}

/* Statement trigger on every key table: changes reach caches at commit. */
Datum
pcar_invalidate_key_cache(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be called as a trigger", "_invalidate_key_cache")));
	pcar_key_cache_invalidate_all();
	return PointerGetDatum(NULL);
}
