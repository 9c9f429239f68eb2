/*
 * sql_functions.c
 *		Thin SQL-callable wrappers: argument handling and error reporting.
 *		Cryptography is in ciphertext.c, keys in key_cache.c and key_store.c.
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "ciphertext.h"
#include "context_expression.h"
#include "drain.h"
#include "encrypted_columns.h"
#include "encrypted_type.h"
#include "encrypted_values.h"
#include "key_cache.h"
#include "key_destruction.h"
#include "key_store.h"
#include "pgcrypt_at_rest.h"
#include "restricted.h"
#include "server_key.h"
#include "servers.h"
#include "shared_state.h"
#include "sodium_provider.h"
#include "sql_functions.h"
#include "value_census.h"

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
PG_FUNCTION_INFO_V1(pcar_confirm_restore);
PG_FUNCTION_INFO_V1(pcar_worker_databases);
PG_FUNCTION_INFO_V1(pcar_rows_under_key);
PG_FUNCTION_INFO_V1(pcar_destroy_key_sql);
PG_FUNCTION_INFO_V1(pcar_add_server_sql);
PG_FUNCTION_INFO_V1(pcar_remove_server_sql);
PG_FUNCTION_INFO_V1(pcar_replace_server_key_sql);
PG_FUNCTION_INFO_V1(pcar_complete_server_key_replacement_sql);
PG_FUNCTION_INFO_V1(pcar_this_server_public_key);

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
	/* the caller's data error, not the server's: not class XX */
	if (!pcar_ciphertext_open((uint8 *) VARDATA(result), data, len, key,
							  context, context_len))
	{
		/* serial ids, before 1.4, repeat across databases */
		if (key_id < PCAR_FIRST_RANDOM_KEY_ID)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("could not decrypt a value under key %d", key_id),
					 errdetail("The value was altered, the context given differs from the one it was encrypted with, or the value was copied from another database, where a key made before version 1.4 had the same id."),
					 errhint("Pass the same context that was used to encrypt the value.")));
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("could not decrypt a value under key %d", key_id),
				 errdetail("The value was altered, or the context given differs from the one it was encrypted with."),
				 errhint("Pass the same context that was used to encrypt the value.")));
	}
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

/* ASCII and Unicode white space (the Unicode White_Space property). */
static bool
pcar_is_white_space(pg_wchar c)
{
	return c == ' ' || (c >= 0x09 && c <= 0x0d) || c == 0x85 || c == 0xa0 ||
		c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
		c == 0x202f || c == 0x205f || c == 0x3000;
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

/*
 * A new keyring's name: no control character, no white space at either end
 * ("pii" and "pii " would be two keyrings no one can tell apart).  Existing
 * names, made before this rule, are still accepted everywhere else.
 */
static void
check_new_keyring_name(const char *name)
{
	const unsigned char *p = (const unsigned char *) name;
	size_t		len = strlen(name);
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;
	pg_wchar	first = 0;
	pg_wchar	last = 0;
	const char *problem = NULL;

	while (*p != '\0' && problem == NULL)
	{
		int			char_len = utf8 ? pg_utf_mblen(p) : pg_mblen((const char *) p);
		pg_wchar	c = utf8 ? utf8_to_unicode(p) : (*p < 0x80 ? *p : 0x80);

		if (c < 0x20 || c == 0x7f || (utf8 && c >= 0x80 && c < 0xa0))
			problem = "A keyring name must not contain control characters.";
		if ((const char *) p == name)
			first = c;
		last = c;
		p += char_len;
	}
	if (problem == NULL && len > 0 &&
		(pcar_is_white_space(first) || pcar_is_white_space(last)))
		problem = "A keyring name must not begin or end with white space.";
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid keyring name"),
				 errdetail("%s", problem)));
}

Datum
pcar_create_keyring(PG_FUNCTION_ARGS)
{
	char	   *name = keyring_name_arg(fcinfo);

	check_new_keyring_name(name);
	PG_RETURN_INT32(pcar_store_create_keyring(name));
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

/*
 * alter_keyring(name, rotate_after, max_encryptions, priority).  An omitted
 * argument gets a default no call can mean (a negative interval or count,
 * or a NULL priority) and leaves its property as it is; NULL rotate_after or
 * max_encryptions means no limit.  The three-argument form of 1.1 and 1.2
 * sets both limits.
 */
Datum
pcar_alter_keyring(PG_FUNCTION_ARGS)
{
	char	   *keyring;
	PcarKeyringChange change;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("keyring must not be null")));
	keyring = keyring_name_arg(fcinfo);
	memset(&change, 0, sizeof(change));

	change.set_rotate_after = true;
	change.rotate_after_null = PG_ARGISNULL(1);
	if (!PG_ARGISNULL(1))
	{
		Interval   *rotate_after = PG_GETARG_INTERVAL_P(1);
		Interval   *zero = palloc0(sizeof(Interval));
		bool		omitted = PG_NARGS() > 3 && rotate_after->month == 0 &&
			rotate_after->day == 0 && rotate_after->time == -USECS_PER_SEC;

		if (omitted)
			change.set_rotate_after = false;
		else if (DatumGetBool(DirectFunctionCall2(interval_le, PG_GETARG_DATUM(1),
												  IntervalPGetDatum(zero))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("rotate_after must be a positive interval")));
		change.rotate_after = PG_GETARG_DATUM(1);
	}
	change.set_max_encryptions = true;
	change.max_encryptions_null = PG_ARGISNULL(2);
	if (!PG_ARGISNULL(2))
	{
		change.max_encryptions = PG_GETARG_INT64(2);
		if (PG_NARGS() > 3 && change.max_encryptions == -1)
			change.set_max_encryptions = false;
		else if (change.max_encryptions <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_encryptions must be positive")));
	}
	change.set_priority = PG_NARGS() > 3 && !PG_ARGISNULL(3);
	if (change.set_priority)
		change.priority = PG_GETARG_INT32(3);

	pcar_store_alter_keyring(keyring, &change);
	pcar_wake_worker_at_commit();
	PG_RETURN_VOID();
}

/*
 * Declares that the context of a column's values is an expression over its
 * row, so the rotation worker can re-encrypt them.  Only the table's owner
 * (or a superuser) may, and the declaration is recorded for the owner at
 * this moment: the worker evaluates it as that owner, and only while the
 * table still has that owner.
 */
Datum
pcar_set_column_context(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *column;
	AttrNumber	attnum;
	char	   *expression = NULL;
	Oid			owner;
	PcarValueWalk *walk;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("table and column must not be null")));
	relid = PG_GETARG_OID(0);
	column = NameStr(*PG_GETARG_NAME(1));
	if (!PG_ARGISNULL(2))
		expression = text_to_cstring(PG_GETARG_TEXT_PP(2));
	pcar_store_require_current_schema();

	/* held to the end: the owner checked is the owner recorded (ALTER ... OWNER waits) */
	LockRelationOid(relid, AccessShareLock);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(get_rel_relkind(relid)),
					   get_rel_name(relid));
	owner = pcar_relation_owner(relid);
	attnum = get_attnum(relid, column);
	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						column, get_rel_name(relid))));
	walk = pcar_value_walk_create();
	if (pcar_type_holding(walk, get_atttype(relid, attnum)) == PCAR_HOLDS_NOTHING)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" cannot hold values of type pgcrypt_at_rest.encrypted", column)));

	/* one expression over the row, castable to bytea: checked as the owner, as it will run */
	if (expression != NULL)
	{
		Relation	rel = table_open(relid, NoLock);
		PcarRestricted r;

		pcar_as_role_begin(&r, owner);
		(void) pcar_context_compile(rel, expression);
		pcar_as_role_end(&r);
		table_close(rel, NoLock);
	}
	pcar_context_store(relid, attnum, expression, owner);
	pcar_wake_worker_at_commit();
	PG_RETURN_VOID();
}

/* Runs a whole pass now, in the caller's transaction; returns values re-encrypted. */
Datum
pcar_drain(PG_FUNCTION_ARGS)
{
	PcarDrainState state;
	PcarDrainResult result;
	int64		total = 0;

	pcar_store_require_current_schema();
	pcar_drain_state_init(&state, CurrentMemoryContext);
	state.new_pass = true;
	do
	{
		CHECK_FOR_INTERRUPTS();
		pcar_drain_batch(&state, &result, NIL);
		total += result.reencrypted;
		/* a pass per drain priority, highest first */
	} while (result.pass_running || result.lower_priorities_left);
	PG_RETURN_INT64(total);
}

Datum
pcar_destroy_drained_keys_sql(PG_FUNCTION_ARGS)
{
	List	   *destroyed;
	Datum	   *ids;
	ListCell   *cell;
	int			n = 0;

	pcar_store_require_current_schema();
	destroyed = pcar_destroy_drained_keys();
	ids = palloc(sizeof(Datum) * Max(list_length(destroyed), 1));

	foreach(cell, destroyed)
		ids[n++] = Int32GetDatum(lfirst_int(cell));
	PG_RETURN_ARRAYTYPE_P(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
}

/* Every database in the worker pool, from shared memory (rotation_workers). */
Datum
pcar_worker_databases(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PcarDatabaseState *states = palloc(sizeof(PcarDatabaseState) * PCAR_MAX_DATABASES);
	int			n = pcar_shared_database_states(states, PCAR_MAX_DATABASES);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	for (int i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7] = {false};

		values[0] = ObjectIdGetDatum(states[i].dboid);
		values[1] = Int32GetDatum(states[i].pid);
		nulls[1] = states[i].pid == 0;
		values[2] = CStringGetTextDatum(states[i].state);
		values[3] = BoolGetDatum(states[i].work_signalled);
		values[4] = TimestampTzGetDatum(states[i].waiting_since);
		nulls[4] = states[i].waiting_since == 0;
		values[5] = TimestampTzGetDatum(states[i].visit_started_at);
		nulls[5] = states[i].visit_started_at == 0;
		values[6] = TimestampTzGetDatum(states[i].visit_ended_at);
		nulls[6] = states[i].visit_ended_at == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* One row of rows_under_key(): tid and count NULL for a column it cannot read. */
static void
put_row_under_key(const PcarColumn *column, ItemPointer tid, int32 values, void *arg)
{
	ReturnSetInfo *rsinfo = arg;
	char	   *attname = get_attname(column->relid, column->attnum, true);
	NameData	name;
	Datum		row[4];
	bool		nulls[4] = {false, false, tid == NULL, tid == NULL};

	if (attname == NULL)
		return;					/* dropped since the catalogs were read */
	namestrcpy(&name, attname);
	pfree(attname);
	row[0] = ObjectIdGetDatum(column->relid);
	row[1] = NameGetDatum(&name);
	row[2] = tid ? PointerGetDatum(tid) : (Datum) 0;
	row[3] = Int32GetDatum(values);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
}

/*
 * Where the values under a key are: every row the caller's snapshot sees
 * with such a value, per column, and how many values it holds there.  Read
 * from the heaps, as the counts before destruction are: no user code runs,
 * and nothing but locations and counts comes out.  A column that cannot be
 * read (foreign or temporary table, range over encrypted, a table of
 * another access method) gives one row without a tid: it may hold some.
 */
Datum
pcar_rows_under_key(PG_FUNCTION_ARGS)
{
	int32		key_id = PG_GETARG_INT32(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			ncolumns;
	PcarColumn *columns;
	PcarColumn *readable;
	const char *reason;

	InitMaterializedSRF(fcinfo, 0);
	columns = pcar_encrypted_columns(&ncolumns);
	readable = palloc(sizeof(PcarColumn) * Max(ncolumns, 1));
	for (int c = 0; c < ncolumns;)
	{
		int			n = 1;
		int			nreadable = 0;

		/* the table's columns, read in one scan; those that cannot be read said so */
		while (c + n < ncolumns && columns[c + n].relid == columns[c].relid)
			n++;
		for (int j = 0; j < n; j++)
		{
			if (pcar_column_is_readable(&columns[c + j], &reason))
				readable[nreadable++] = columns[c + j];
			else
				put_row_under_key(&columns[c + j], NULL, 0, rsinfo);
		}
		if (nreadable > 0 &&
			pcar_census_rows(readable, nreadable, key_id, GetActiveSnapshot(),
							 put_row_under_key, rsinfo) == PCAR_CENSUS_UNSUPPORTED)
			for (int j = 0; j < nreadable; j++)
				put_row_under_key(&readable[j], NULL, 0, rsinfo);
		c += n;
	}
	return (Datum) 0;
}

/*
 * Destroys a deprecated key now, even one values still need, when told how
 * many values become unreadable (see key_destruction.c).
 */
Datum
pcar_destroy_key_sql(PG_FUNCTION_ARGS)
{
	require_not_null(fcinfo, 0, "key_id");
	if (!PG_ARGISNULL(1) && PG_GETARG_INT64(1) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unreadable_values must not be negative")));
	pcar_store_require_current_schema();
	PG_RETURN_INT64(pcar_destroy_key(PG_GETARG_INT32(0), !PG_ARGISNULL(1),
									 PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1)));
}

/* A new server's name: shown in views and messages, so printable and short. */
static char *
server_name_arg(FunctionCallInfo fcinfo)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	size_t		len = strlen(name);
	bool		control = false;

	for (const unsigned char *p = (const unsigned char *) name; *p; p++)
		control |= *p < 0x20 || *p == 0x7f;
	if (len == 0 || len > 200 || control || isspace((unsigned char) name[0]) ||
		isspace((unsigned char) name[len - 1]))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid server name"),
				 errdetail("A server name is 1 to 200 bytes long, without control characters or white space at either end.")));
	return name;
}

/* A server joins: every live key sealed for it. */
Datum
pcar_add_server_sql(PG_FUNCTION_ARGS)
{
	require_not_null(fcinfo, 0, "name");
	require_not_null(fcinfo, 1, "public_key");
	pcar_store_require_current_schema();
	PG_RETURN_INT32(pcar_add_server(server_name_arg(fcinfo), PG_GETARG_BYTEA_PP(1)));
}

/* A server leaves: its copies go, and the keys it could open are replaced. */
Datum
pcar_remove_server_sql(PG_FUNCTION_ARGS)
{
	require_not_null(fcinfo, 0, "name");
	pcar_store_require_current_schema();
	PG_RETURN_INT32(pcar_remove_server(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/* A server moves to a new secret: every live key sealed for it as well. */
Datum
pcar_replace_server_key_sql(PG_FUNCTION_ARGS)
{
	require_not_null(fcinfo, 0, "name");
	require_not_null(fcinfo, 1, "new_public_key");
	pcar_store_require_current_schema();
	PG_RETURN_INT32(pcar_replace_server_key(text_to_cstring(PG_GETARG_TEXT_PP(0)),
											PG_GETARG_BYTEA_PP(1)));
}

/* It runs with the new secret: the old copies go. */
Datum
pcar_complete_server_key_replacement_sql(PG_FUNCTION_ARGS)
{
	require_not_null(fcinfo, 0, "name");
	pcar_store_require_current_schema();
	pcar_complete_server_key_replacement(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/* After a restore: its keys may be destroyed once drained, like any other. */
Datum
pcar_confirm_restore(PG_FUNCTION_ARGS)
{
	int64		adopted = pcar_store_confirm_restore();

	pcar_wake_worker_at_commit();
	PG_RETURN_INT64(adopted);
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

/* For the servers view: this server's public key, NULL without a secret. */
Datum
pcar_this_server_public_key(PG_FUNCTION_ARGS)
{
	bytea	   *result;

	if (!pcar_server_key_loaded())
		PG_RETURN_NULL();
	result = palloc(VARHDRSZ + PCAR_SERVER_KEY_BYTES);
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
