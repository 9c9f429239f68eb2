/*
 * sql_functions.c
 *		Thin SQL-callable wrappers: argument handling and error reporting.
 *		Cryptography is in ciphertext.c, keys in key_cache.c and key_store.c.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "ciphertext.h"
#include "drain.h"
#include "encrypted_type.h"
#include "key_cache.h"
#include "key_destruction.h"
#include "key_store.h"
#include "pgcrypt_at_rest.h"
#include "restricted.h"
#include "server_key.h"
#include "shared_state.h"
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
PG_FUNCTION_INFO_V1(pcar_deprecate_key);
PG_FUNCTION_INFO_V1(pcar_alter_keyring);
PG_FUNCTION_INFO_V1(pcar_set_column_context);
PG_FUNCTION_INFO_V1(pcar_drain);
PG_FUNCTION_INFO_V1(pcar_destroy_drained_keys_sql);

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
	pcar_count_encryption(key_id);

	result = palloc(VARHDRSZ + PCAR_OVERHEAD + plaintext_len);
	SET_VARSIZE(result, VARHDRSZ + PCAR_OVERHEAD + plaintext_len);
	pcar_ciphertext_seal((uint8 *) VARDATA(result), (uint32) key_id, key,
						 plaintext, plaintext_len, context, context_len);
	PG_RETURN_ENCRYPTED_P(result);
}

/* text and bytea share one layout: the bytes of either are encrypted */
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

Datum
pcar_encrypt_text(PG_FUNCTION_ARGS)
{
	return pcar_encrypt_bytea(fcinfo);
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
	int32		key_id = pcar_store_rotate_keyring(keyring_name_arg(fcinfo));

	pcar_wake_worker_at_commit();
	PG_RETURN_INT32(key_id);
}

Datum
pcar_deprecate_key(PG_FUNCTION_ARGS)
{
	pcar_store_deprecate_key(PG_GETARG_INT32(0));
	pcar_wake_worker_at_commit();
	PG_RETURN_VOID();
}

Datum
pcar_alter_keyring(PG_FUNCTION_ARGS)
{
	char	   *keyring;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("keyring must not be null")));
	keyring = keyring_name_arg(fcinfo);
	if (!PG_ARGISNULL(1))
	{
		Interval   *zero = palloc0(sizeof(Interval));

		if (DatumGetBool(DirectFunctionCall2(interval_le, PG_GETARG_DATUM(1),
											 IntervalPGetDatum(zero))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("rotate_after must be a positive interval")));
	}
	if (!PG_ARGISNULL(2) && PG_GETARG_INT64(2) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_encryptions must be positive")));
	pcar_store_alter_keyring(keyring,
							 PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1), PG_ARGISNULL(1),
							 PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2), PG_ARGISNULL(2));
	pcar_wake_worker_at_commit();
	PG_RETURN_VOID();
}

/* Parses "SELECT (expression)"; a syntax error is returned in *problem. */
static List *
parse_select_of(const char *expression, char **problem)
{
	MemoryContext context = CurrentMemoryContext;
	List	   *volatile parsed = NIL;

	*problem = NULL;
	/* parsing only allocates memory: its error can be caught here */
	PG_TRY();
	{
		parsed = raw_parser(psprintf("SELECT (%s)", expression), RAW_PARSE_DEFAULT);
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		*problem = error->message;
	}
	PG_END_TRY();
	return parsed;
}

/*
 * Declares that the context of a column's values is an expression over its
 * row, so the rotation worker can re-encrypt them.  Only the table's owner
 * may: the worker evaluates the expression as that owner.
 */
Datum
pcar_set_column_context(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *column;
	AttrNumber	attnum;
	char	   *expression = NULL;
	PcarRestricted r;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("table and column must not be null")));
	relid = PG_GETARG_OID(0);
	column = NameStr(*PG_GETARG_NAME(1));
	if (!PG_ARGISNULL(2))
		expression = text_to_cstring(PG_GETARG_TEXT_PP(2));

	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(relid)),
					   get_rel_name(relid));
	attnum = get_attnum(relid, column);
	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						column, get_rel_name(relid))));
	if (getBaseType(get_atttype(relid, attnum)) !=
		GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("encrypted"),
						ObjectIdGetDatum(get_namespace_oid(PCAR_SCHEMA, false))))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" is not of type pgcrypt_at_rest.encrypted", column)));

	/*
	 * Exactly one expression: the worker splices it into its own query, so a
	 * text that closes the parenthesis and adds statements must not pass.
	 */
	if (expression != NULL)
	{
		char	   *problem;
		List	   *parsed = parse_select_of(expression, &problem);
		SelectStmt *select;

		select = list_length(parsed) == 1 ?
			(SelectStmt *) ((RawStmt *) linitial(parsed))->stmt : NULL;
		if (select == NULL || !IsA(select, SelectStmt) || list_length(select->targetList) != 1 ||
			select->fromClause != NIL || select->whereClause != NULL ||
			strstr(expression, "--") != NULL || strstr(expression, "/*") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("context_expression must be a single SQL expression"),
					 problem ? errdetail("%s.", problem) : 0,
					 errhint("For example 'pg_catalog.int8send(id)'.")));
	}

	/* the expression must be valid SQL over the row, giving bytea */
	if (expression != NULL)
	{
		pcar_restricted_begin(&r, pcar_relation_owner(relid));
		pcar_spi_execute(psprintf("SELECT (%s)::pg_catalog.bytea FROM ONLY %s LIMIT 0", expression,
								  quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
															 get_rel_name(relid))),
						 SPI_OK_SELECT, 0, NULL, NULL);
		pcar_restricted_end(&r);
	}
	pcar_store_set_column_context(get_namespace_name(get_rel_namespace(relid)),
								  get_rel_name(relid), column, expression,
								  GetUserNameFromId(pcar_relation_owner(relid), false));
	pcar_wake_worker_at_commit();
	PG_RETURN_VOID();
}

/* Runs a whole pass now, in the caller's transaction; returns values re-encrypted. */
Datum
pcar_drain(PG_FUNCTION_ARGS)
{
	PcarDrainResult result;
	int64		total = 0;

	do
	{
		CHECK_FOR_INTERRUPTS();
		pcar_drain_batch(&result, NIL, true);
		total += result.reencrypted;
	} while (result.pass_running);
	PG_RETURN_INT64(total);
}

Datum
pcar_destroy_drained_keys_sql(PG_FUNCTION_ARGS)
{
	List	   *destroyed = pcar_destroy_drained_keys();
	Datum	   *ids = palloc(sizeof(Datum) * Max(list_length(destroyed), 1));
	ListCell   *cell;
	int			n = 0;

	foreach(cell, destroyed)
		ids[n++] = Int32GetDatum(lfirst_int(cell));
	PG_RETURN_ARRAYTYPE_P(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
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

/* Called by the install script; the launcher starts this database's worker. */
Datum
pcar_register_local_server(PG_FUNCTION_ARGS)
{
	pcar_store_register_local_server();
	pcar_wake_worker_at_commit();
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
