/*
 * drain.c
 *		Finding every value under a deprecated key and re-encrypting it under
 *		its keyring's active key.
 *
 * A pass visits every column of type encrypted (or a domain over it) in
 * tables, partitions and inheritance children, in (table, column) order,
 * and each column in physical order through a TID range scan.  A batch is one
 * statement locking at most rotation_batch_size rows with FOR UPDATE SKIP
 * LOCKED (rows an application holds are left for the next pass), the
 * re-encryption in C, and one UPDATE joining on ctid.  Where the pass stands
 * is kept in rotation_pass, updated in the batch's own transaction, so a
 * crash resumes from the last committed batch.
 *
 * The worker is not the application: user statements run as the table's
 * owner in a security-restricted context with search_path pinned, and with
 * session_replication_role = replica so that user triggers and rules do not
 * fire (ENABLE ALWAYS ones excepted, as for logical replication).  Only the
 * encrypted column is assigned.
 *
 * A value bound to a context can be re-encrypted only if the column
 * declares where its context comes from (column_context, an expression over
 * the row).  Values that cannot be re-encrypted are counted with the reason
 * in rotation_progress and keep their key alive.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_am.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "storage/lock.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "ciphertext.h"
#include "drain.h"
#include "encrypted_type.h"
#include "guc.h"
#include "key_cache.h"
#include "key_store.h"
#include "pgcrypt_at_rest.h"
#include "restricted.h"
#include "shared_state.h"
#include "sodium_provider.h"

#define EQ " OPERATOR(pg_catalog.=) "

typedef struct DrainKey
{
	int32		key_id;
	char		keyring[NAMEDATALEN];
	bool		usable;			/* old and new keys opened */
	char	   *unusable_reason;
	int32		new_key_id;
	uint8	   *old_key;		/* both in the batch's locked buffer */
	uint8	   *new_key;
	int64		reencrypted;	/* in this batch */
	int64		failed;
	const char *failure_reason;
} DrainKey;

typedef struct DrainColumn
{
	Oid			relid;
	int16		attnum;
	char		relkind;
} DrainColumn;

/* The column a batch is working on, for pcar_drain_note_error(). */
static Oid	current_relid = InvalidOid;
static int16 current_attnum = 0;

static Oid
encrypted_type_oid(void)
{
	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
						   CStringGetDatum("encrypted"),
						   ObjectIdGetDatum(get_namespace_oid(PCAR_SCHEMA, false)));
}

static Datum
int4_array(int32 *values, int n)
{
	Datum	   *datums = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		datums[i] = Int32GetDatum(values[i]);
	return PointerGetDatum(construct_array(datums, n, INT4OID, 4, true, TYPALIGN_INT));
}

/* Deprecated keys still being drained, minus the excluded ones. */
static DrainKey *
load_drain_keys(List *exclude_keys, int *nkeys)
{
	PcarRestricted r;
	DrainKey   *keys;

	pcar_restricted_begin(&r, pcar_store_owner());
	pcar_spi_execute("SELECT k.id, r.name FROM " PCAR_SCHEMA ".data_key k"
					 " JOIN " PCAR_SCHEMA ".keyring r ON r.id" EQ "k.keyring_id"
					 " WHERE k.status" EQ "'deprecated' AND k.drained_at IS NULL"
					 " ORDER BY k.id",
					 SPI_OK_SELECT, 0, NULL, NULL);
	keys = MemoryContextAllocZero(r.caller_context, sizeof(DrainKey) * Max(SPI_processed, 1));
	*nkeys = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		key_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1, &isnull));

		if (list_member_int(exclude_keys, key_id))
			continue;
		keys[*nkeys].key_id = key_id;
		strlcpy(keys[*nkeys].keyring,
				SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2), NAMEDATALEN);
		(*nkeys)++;
	}
	pcar_restricted_end(&r);
	return keys;
}

/*
 * Opens each key and its keyring's active key, copying the material into
 * the batch's own locked buffer: a cache flush during the batch's queries
 * would free the cache's copy.  A key that cannot be opened (no copy for
 * this server, say) is marked, with the reason, instead of failing the batch.
 */
static uint8 *
open_drain_keys(DrainKey *keys, int nkeys)
{
	uint8	   *buffer = pcar_secure_alloc(Max(nkeys, 1) * 2 * PCAR_DATA_KEY_BYTES);

	for (int i = 0; i < nkeys; i++)
	{
		DrainKey   *key = &keys[i];
		MemoryContext context = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;

		key->old_key = buffer + i * 2 * PCAR_DATA_KEY_BYTES;
		key->new_key = key->old_key + PCAR_DATA_KEY_BYTES;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(context);
		PG_TRY();
		{
			const uint8 *new_key;

			memcpy(key->old_key, pcar_key_cache_get(key->key_id), PCAR_DATA_KEY_BYTES);
			key->new_key_id = pcar_key_cache_active(key->keyring, strlen(key->keyring), &new_key);
			memcpy(key->new_key, new_key, PCAR_DATA_KEY_BYTES);
			key->usable = true;
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			ErrorData  *error;

			MemoryContextSwitchTo(context);
			error = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			key->usable = false;
			key->unusable_reason = pstrdup(error->message);
			FreeErrorData(error);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	return buffer;
}

/* Columns whose type is $1 or a domain over it, recursively. */
#define COLUMNS_OF_ENCRYPTED_TYPES \
	"WITH RECURSIVE types(oid) AS (" \
	"  SELECT $1" \
	"  UNION SELECT t.oid FROM pg_catalog.pg_type t, types" \
	"   WHERE t.typbasetype" EQ "types.oid AND t.typtype" EQ "'d')" \
	" SELECT a.attrelid, a.attnum, c.relkind" \
	"  FROM pg_catalog.pg_attribute a" \
	"  JOIN pg_catalog.pg_class c ON c.oid" EQ "a.attrelid" \
	"  JOIN types ON a.atttypid" EQ "types.oid" \
	" WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped"

/*
 * Columns of type encrypted (or a domain over it): those a pass visits, or
 * with uncountable, those it cannot: in foreign tables and in temporary
 * tables (of any session), whose values no count can see.
 */
static DrainColumn *
encrypted_columns(int *ncolumns, bool uncountable)
{
	PcarRestricted r;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(encrypted_type_oid())};
	DrainColumn *columns;

	/* catalogs only: any role may read them */
	pcar_restricted_begin(&r, GetUserId());
	pcar_spi_execute(uncountable ?
					 COLUMNS_OF_ENCRYPTED_TYPES
					 "   AND (c.relkind OPERATOR(pg_catalog.=) 'f'"
					 "        OR (c.relkind OPERATOR(pg_catalog.=) ANY ('{r,m}')"
					 "            AND c.relpersistence OPERATOR(pg_catalog.=) 't'))"
					 " ORDER BY 1, 2" :
					 COLUMNS_OF_ENCRYPTED_TYPES
					 "   AND (c.relkind OPERATOR(pg_catalog.=) 'r'"
					 "        OR (c.relkind OPERATOR(pg_catalog.=) 'm' AND c.relispopulated))"
					 "   AND c.relpersistence OPERATOR(pg_catalog.<>) 't'"
					 "   AND c.relnamespace OPERATOR(pg_catalog.<>) '" PCAR_SCHEMA "'::pg_catalog.regnamespace"
					 " ORDER BY 1, 2",
					 SPI_OK_SELECT, 1, types, values);
	columns = MemoryContextAlloc(r.caller_context, sizeof(DrainColumn) * Max(SPI_processed, 1));
	*ncolumns = SPI_processed;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		columns[i].relid = DatumGetObjectId(SPI_getbinval(tuple, desc, 1, &isnull));
		columns[i].attnum = DatumGetInt16(SPI_getbinval(tuple, desc, 2, &isnull));
		columns[i].relkind = DatumGetChar(SPI_getbinval(tuple, desc, 3, &isnull));
	}
	pcar_restricted_end(&r);
	return columns;
}

typedef struct PassCursor
{
	bool		exists;
	Oid			relid;
	int16		attnum;
	ItemPointerData after;		/* resume after this row of the column's table */
	TimestampTz started_at;		/* identifies the pass */
} PassCursor;

/*
 * The columns of the current pass, found when it starts: the catalog query
 * is the most expensive statement of a batch in a database with many
 * tables.  A column created during the pass waits for the next one; the
 * count before a key is destroyed looks for columns afresh.
 */
static DrainColumn *pass_columns = NULL;
static int	pass_ncolumns = 0;
static TimestampTz pass_columns_for = 0;

static DrainColumn *
columns_of_pass(TimestampTz pass_started_at, int *ncolumns)
{
	if (pass_columns == NULL || pass_columns_for != pass_started_at)
	{
		DrainColumn *found = encrypted_columns(ncolumns, false);

		if (pass_columns != NULL)
			pfree(pass_columns);
		pass_columns = MemoryContextAlloc(TopMemoryContext,
										  sizeof(DrainColumn) * Max(*ncolumns, 1));
		memcpy(pass_columns, found, sizeof(DrainColumn) * *ncolumns);
		pass_ncolumns = *ncolumns;
		pass_columns_for = pass_started_at;
	}
	*ncolumns = pass_ncolumns;
	return pass_columns;
}

static void
read_cursor(PassCursor *cursor)
{
	PcarRestricted r;

	pcar_restricted_begin(&r, pcar_store_owner());
	pcar_spi_execute("SELECT relid, attnum, resume_after, started_at FROM " PCAR_SCHEMA ".rotation_pass",
					 SPI_OK_SELECT, 0, NULL, NULL);
	cursor->exists = SPI_processed > 0;
	if (cursor->exists)
	{
		bool		isnull;

		cursor->relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		cursor->attnum = DatumGetInt16(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0],
																	 SPI_tuptable->tupdesc, 3, &isnull)),
						&cursor->after);
		cursor->started_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc, 4, &isnull));
	}
	pcar_restricted_end(&r);
}

static void
write_cursor(const PassCursor *cursor, bool new_pass)
{
	PcarRestricted r;
	Oid			types[3] = {OIDOID, INT2OID, TIDOID};
	Datum		values[3] = {ObjectIdGetDatum(cursor->relid), Int16GetDatum(cursor->attnum),
	PointerGetDatum(&cursor->after)};

	pcar_restricted_begin(&r, pcar_store_owner());
	if (!cursor->exists)
		pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".rotation_pass", SPI_OK_DELETE, 0, NULL, NULL);
	else if (new_pass)
		pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".rotation_pass (relid, attnum, resume_after)"
						 " VALUES ($1, $2, $3)",
						 SPI_OK_INSERT, 3, types, values);
	else
		pcar_spi_execute("UPDATE " PCAR_SCHEMA ".rotation_pass"
						 " SET relid = $1, attnum = $2, resume_after = $3",
						 SPI_OK_UPDATE, 3, types, values);
	pcar_restricted_end(&r);
}

/* "schema.table" and "column", quoted, or false if the column is gone. */
static bool
column_names(const DrainColumn *column, char **relation, char **attname,
			 char **schema_name, char **table_name)
{
	char	   *rel = get_rel_name(column->relid);
	char	   *att = get_attname(column->relid, column->attnum, true);
	Oid			nsp = get_rel_namespace(column->relid);

	if (rel == NULL || att == NULL || !OidIsValid(nsp))
		return false;
	*schema_name = get_namespace_name(nsp);
	*table_name = rel;
	if (*schema_name == NULL)
		return false;
	*relation = quote_qualified_identifier(*schema_name, rel);
	*attname = pstrdup(quote_identifier(att));
	return *schema_name != NULL;
}

/*
 * The declared context expression of a column, or NULL.  A declaration made
 * for another owner of the table is not used (*stale is set): it would run
 * with the rights of whoever owns the table now.
 */
static char *
context_expression(const DrainColumn *column, const char *schema_name, const char *table_name,
				   const char *column_name, bool *stale)
{
	PcarRestricted r;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3] = {CStringGetTextDatum(schema_name), CStringGetTextDatum(table_name),
	CStringGetTextDatum(column_name)};
	char	   *expression = NULL;
	char	   *owner = GetUserNameFromId(pcar_relation_owner(column->relid), false);

	*stale = false;
	pcar_restricted_begin(&r, pcar_store_owner());
	pcar_spi_execute("SELECT context_expression, table_owner FROM " PCAR_SCHEMA ".column_context"
					 " WHERE table_schema" EQ "$1 AND table_name" EQ "$2 AND column_name" EQ "$3",
					 SPI_OK_SELECT, 3, types, values);
	if (SPI_processed > 0)
	{
		if (strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2), owner) == 0)
			expression = MemoryContextStrdup(r.caller_context,
											 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		else
			*stale = true;
	}
	pcar_restricted_end(&r);
	return expression;
}

/*
 * Counts values per key in one column, as the table's owner; adds them to
 * counts[] (parallel to keys[]).
 * These counts feed rotation_status; the count that decides destruction is
 * count_key_versions().
 *
 * Counting runs as the key tables' owner, a superuser, not as the table's:
 * row-level security forced on the table could hide rows from its owner,
 * and a key destroyed under hidden rows loses them.  No user code runs:
 * a scan of ONLY the table calling key_id() on a column.
 */
static void
count_column(const DrainColumn *column, const int32 *key_ids, int nkeys, int64 *counts)
{
	char	   *relation,
			   *attname,
			   *schema_name,
			   *table_name;
	PcarRestricted r;
	Oid			types[1] = {INT4ARRAYOID};
	Datum		values[1];
	char	   *sql;

	if (nkeys == 0 || !column_names(column, &relation, &attname, &schema_name, &table_name))
		return;
	values[0] = int4_array((int32 *) key_ids, nkeys);
	pcar_restricted_begin(&r, pcar_store_owner());
	sql = psprintf("SELECT " PCAR_SCHEMA ".key_id(%s), pg_catalog.count(*)"
				   " FROM ONLY %s WHERE " PCAR_SCHEMA ".key_id(%s)" EQ "ANY ($1)"
				   " GROUP BY 1",
				   attname, relation, attname);
	pcar_spi_execute(sql, SPI_OK_SELECT, 1, types, values);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		key_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		int64		count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));

		for (int k = 0; k < nkeys; k++)
			if (key_ids[k] == key_id)
				counts[k] += count;
	}
	pcar_restricted_end(&r);
}

/*
 * Values under the key in one column, counting every row version that is
 * not dead to every snapshot: live rows, rows written or being deleted by
 * transactions in progress, and rows a still-running snapshot can see
 * although they were deleted or updated since.  Such a version can still be
 * read, and copied, so its key must stay.  Scanning every version also
 * catches a row that an UPDATE moves behind the scan while it runs: its old
 * version is still there, not yet dead to this transaction's own snapshot.
 * Read directly, as no SQL snapshot shows all of this; no user code runs.
 */
static int64
count_key_versions(const DrainColumn *column, int32 key_id)
{
	Relation	rel = try_table_open(column->relid, AccessShareLock);
	TableScanDesc scan;
	HeapTuple	tuple;
	TransactionId oldest_xmin;
	int64		count = 0;

	if (rel == NULL)
		return 0;				/* dropped since: nothing left in it */
	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot count the values of table \"%s\": only the heap access method is supported",
						RelationGetRelationName(rel))));

	oldest_xmin = GetOldestNonRemovableTransactionId(rel);
	scan = table_beginscan(rel, SnapshotAny, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Buffer		buffer = ((HeapScanDesc) scan)->rs_cbuf;
		HTSV_Result state;
		bool		isnull;
		Datum		value;

		CHECK_FOR_INTERRUPTS();
		LockBuffer(buffer, BUFFER_LOCK_SHARE);
		state = HeapTupleSatisfiesVacuum(tuple, oldest_xmin, buffer);
		LockBuffer(buffer, BUFFER_LOCK_UNLOCK);
		if (state == HEAPTUPLE_DEAD)
			continue;

		value = heap_getattr(tuple, column->attnum, RelationGetDescr(rel), &isnull);
		if (!isnull)
		{
			Encrypted  *header = (Encrypted *) PG_DETOAST_DATUM_SLICE(value, 0, PCAR_HEADER_BYTES);

			if (ENCRYPTED_LEN(header) >= PCAR_HEADER_BYTES &&
				(int32) pcar_ciphertext_key_id(ENCRYPTED_DATA(header)) == key_id)
				count++;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return count;
}

int64
pcar_count_key_values(int32 key_id)
{
	int			ncolumns;
	DrainColumn *columns;
	int64		total = 0;

	/* a value the count cannot see may be there: keep every key */
	(void) encrypted_columns(&ncolumns, true);
	if (ncolumns > 0)
		return -1;

	columns = encrypted_columns(&ncolumns, false);
	/* an MVCC snapshot of our own holds back what may count as dead */
	PushActiveSnapshot(GetTransactionSnapshot());
	for (int c = 0; c < ncolumns; c++)
		total += count_key_versions(&columns[c], key_id);
	PopActiveSnapshot();
	return total;
}

/* Does forced row-level security hide rows from the table's (non-bypassing) owner? */
static bool
table_hides_rows_from_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	bool		forced;

	if (!HeapTupleIsValid(tuple))
		return false;
	forced = ((Form_pg_class) GETSTRUCT(tuple))->relrowsecurity &&
		((Form_pg_class) GETSTRUCT(tuple))->relforcerowsecurity;
	ReleaseSysCache(tuple);
	return forced && !has_bypassrls_privilege(pcar_relation_owner(relid));
}

/*
 * At a pass's start and end: the values left per key and column, written to
 * rotation_progress.  At the end, what is left is what could not be
 * re-encrypted in this pass; unusable keys and materialized views say why.
 */
static void
record_counts(DrainColumn *columns, int ncolumns, DrainKey *keys, int nkeys, bool pass_end,
			  List **drained_keys)
{
	int32	   *key_ids = palloc(sizeof(int32) * Max(nkeys, 1));
	int64	   *totals = palloc0(sizeof(int64) * Max(nkeys, 1));
	int64	   *counts = palloc(sizeof(int64) * Max(nkeys, 1));
	PcarRestricted r;

	for (int k = 0; k < nkeys; k++)
		key_ids[k] = keys[k].key_id;

	for (int c = 0; c < ncolumns; c++)
	{
		Oid			types[6] = {INT4OID, OIDOID, INT2OID, INT8OID, BOOLOID, TEXTOID};
		Datum		values[6];
		char		nulls[6] = "      ";

		memset(counts, 0, sizeof(int64) * Max(nkeys, 1));
		count_column(&columns[c], key_ids, nkeys, counts);

		pcar_restricted_begin(&r, pcar_store_owner());
		for (int k = 0; k < nkeys; k++)
		{
			const char *reason = NULL;

			totals[k] += counts[k];
			if (pass_end && counts[k] > 0)
				reason = !keys[k].usable ? keys[k].unusable_reason :
					columns[c].relkind == 'm' ?
					"a materialized view: REFRESH it once its sources are drained" :
					table_hides_rows_from_owner(columns[c].relid) ?
					"row-level security forced on the table hides rows from its owner, who re-encrypts them" :
					NULL;
			values[0] = Int32GetDatum(keys[k].key_id);
			values[1] = ObjectIdGetDatum(columns[c].relid);
			values[2] = Int16GetDatum(columns[c].attnum);
			values[3] = Int64GetDatum(counts[k]);
			values[4] = BoolGetDatum(pass_end);
			values[5] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
			nulls[5] = reason ? ' ' : 'n';
			pcar_spi_execute_nulls(
					"INSERT INTO " PCAR_SCHEMA ".rotation_progress AS p"
					" (key_id, relid, attnum, remaining, unrotatable, unrotatable_reason, counted_at)"
					" VALUES ($1, $2, $3, $4,"
					"   CASE WHEN $5 AND $6 IS NOT NULL THEN $4 ELSE 0 END, $6, pg_catalog.now())"
					" ON CONFLICT (key_id, relid, attnum) DO UPDATE SET"
					"   remaining = EXCLUDED.remaining,"
					/* at a pass's start the last pass's findings stand until redone */
					"   unrotatable = CASE WHEN $5 THEN"
					"     CASE WHEN $6 IS NOT NULL THEN $4 ELSE LEAST(p.unrotatable, $4) END"
					"     ELSE LEAST(p.unrotatable, $4) END,"
					"   unrotatable_reason = CASE WHEN $5 THEN COALESCE($6, p.unrotatable_reason)"
					"     WHEN $4 OPERATOR(pg_catalog.=) 0 THEN NULL"
					"     ELSE p.unrotatable_reason END,"
					"   counted_at = pg_catalog.now()",
					SPI_OK_INSERT, 6, types, values, nulls);
		}
		pcar_restricted_end(&r);
	}

	if (pass_end)
	{
		int			nuncountable;
		DrainColumn *uncountable = encrypted_columns(&nuncountable, true);

		/* shown on every key: none is destroyed while such a column exists */
		pcar_restricted_begin(&r, pcar_store_owner());
		for (int c = 0; c < nuncountable; c++)
			for (int k = 0; k < nkeys; k++)
			{
				Oid			types[4] = {INT4OID, OIDOID, INT2OID, TEXTOID};
				Datum		values[4];

				values[0] = Int32GetDatum(keys[k].key_id);
				values[1] = ObjectIdGetDatum(uncountable[c].relid);
				values[2] = Int16GetDatum(uncountable[c].attnum);
				values[3] = CStringGetTextDatum(uncountable[c].relkind == 'f' ?
												"a foreign table: its values cannot be counted, so no deprecated key is destroyed while it has this column" :
												"a temporary table: its values cannot be counted, so no deprecated key is destroyed while it exists");
				pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".rotation_progress AS p"
								 " (key_id, relid, attnum, last_error, last_error_at)"
								 " VALUES ($1, $2, $3, $4, pg_catalog.now())"
								 " ON CONFLICT (key_id, relid, attnum) DO UPDATE SET"
								 "   last_error = $4, last_error_at = pg_catalog.now()",
								 SPI_OK_INSERT, 4, types, values);
			}
		pcar_restricted_end(&r);

		for (int k = 0; k < nkeys && nuncountable == 0; k++)
			if (totals[k] == 0)
				*drained_keys = lappend_int(*drained_keys, keys[k].key_id);
	}
}

static void
record_batch(const DrainColumn *column, DrainKey *keys, int nkeys)
{
	PcarRestricted r;
	Oid			types[6] = {INT4OID, OIDOID, INT2OID, INT8OID, INT8OID, TEXTOID};

	pcar_restricted_begin(&r, pcar_store_owner());
	for (int k = 0; k < nkeys; k++)
	{
		Datum		values[6];
		char		nulls[6] = "      ";

		if (keys[k].reencrypted == 0 && keys[k].failed == 0)
			continue;
		values[0] = Int32GetDatum(keys[k].key_id);
		values[1] = ObjectIdGetDatum(column->relid);
		values[2] = Int16GetDatum(column->attnum);
		values[3] = Int64GetDatum(keys[k].reencrypted);
		values[4] = Int64GetDatum(keys[k].failed);
		values[5] = keys[k].failure_reason ? CStringGetTextDatum(keys[k].failure_reason) : (Datum) 0;
		nulls[5] = keys[k].failure_reason ? ' ' : 'n';
		pcar_spi_execute_nulls(
				"INSERT INTO " PCAR_SCHEMA ".rotation_progress AS p"
				" (key_id, relid, attnum, reencrypted, unrotatable, unrotatable_reason)"
				" VALUES ($1, $2, $3, $4, $5, $6)"
				" ON CONFLICT (key_id, relid, attnum) DO UPDATE SET"
				"   reencrypted = p.reencrypted + $4,"
				"   remaining = GREATEST(p.remaining - $4, 0),"
				"   unrotatable = p.unrotatable + $5,"
				"   unrotatable_reason = COALESCE($6, p.unrotatable_reason),"
				"   last_batch_at = pg_catalog.now()",
				SPI_OK_INSERT, 6, types, values, nulls);
	}
	pcar_restricted_end(&r);
}

static DrainKey *
find_key(DrainKey *keys, int nkeys, int32 key_id)
{
	for (int k = 0; k < nkeys; k++)
		if (keys[k].key_id == key_id)
			return &keys[k];
	return NULL;
}

/*
 * Triggers and rules set ENABLE ALWAYS or ENABLE REPLICA fire in replica
 * mode too: they would run, as the table's owner, during re-encryption.
 */
static void
refuse_replica_mode_code(Oid relid)
{
	PcarRestricted r;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		found;

	pcar_restricted_begin(&r, pcar_store_owner());
	pcar_spi_execute("SELECT FROM pg_catalog.pg_trigger"
					 " WHERE tgrelid" EQ "$1 AND NOT tgisinternal"
					 "   AND tgenabled OPERATOR(pg_catalog.=) ANY ('{A,R}')"
					 " UNION ALL SELECT FROM pg_catalog.pg_rewrite"
					 " WHERE ev_class" EQ "$1 AND ev_enabled OPERATOR(pg_catalog.=) ANY ('{A,R}')"
					 "   AND rulename OPERATOR(pg_catalog.<>) '_RETURN'",
					 SPI_OK_SELECT, 1, types, values);
	found = SPI_processed > 0;
	pcar_restricted_end(&r);
	if (found)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot re-encrypt table \"%s\": it has triggers or rules that fire in replica mode",
						get_rel_name(relid)),
				 errdetail("Triggers or rules set ENABLE ALWAYS or ENABLE REPLICA would run during re-encryption."),
				 errhint("Set them ENABLE (origin only) while the keys drain, or re-encrypt the column with an UPDATE of your own.")));
}

/* Encrypts under the key's replacement; the plaintext is wiped even on error. */
static void
seal_then_wipe(uint8 *out, const DrainKey *key, uint8 *plaintext, size_t plaintext_len,
			   const uint8 *ctx, size_t ctx_len)
{
	PG_TRY();
	{
		pcar_ciphertext_seal(out, (uint32) key->new_key_id, key->new_key,
							 plaintext, plaintext_len, ctx, ctx_len);
	}
	PG_CATCH();
	{
		pcar_wipe(plaintext, plaintext_len);
		PG_RE_THROW();
	}
	PG_END_TRY();
	pcar_wipe(plaintext, plaintext_len);
}

/*
 * One batch on one column, from the row after *position; returns the number
 * of rows locked, and moves *position to the last one.
 */
static uint64
reencrypt_batch(const DrainColumn *column, ItemPointer position, DrainKey *keys, int nkeys)
{
	char	   *relation,
			   *attname,
			   *schema_name,
			   *table_name;
	char	   *expression;
	bool		stale_context;
	int32	   *usable_ids = palloc(sizeof(int32) * Max(nkeys, 1));
	int			nusable = 0;
	PcarRestricted r;
	Oid			select_types[3] = {TIDOID, INT4ARRAYOID, INT8OID};
	Datum		select_values[3];
	uint64		nrows;
	Datum	   *tids;
	Datum	   *new_values;
	int			nupdates = 0;
	Oid			encrypted_oid = encrypted_type_oid();

	if (!column_names(column, &relation, &attname, &schema_name, &table_name))
		return 0;
	expression = context_expression(column, schema_name, table_name,
									get_attname(column->relid, column->attnum, false),
									&stale_context);
	for (int k = 0; k < nkeys; k++)
		if (keys[k].usable)
			usable_ids[nusable++] = keys[k].key_id;
	if (nusable == 0)
		return 0;

	select_values[0] = PointerGetDatum(position);
	select_values[1] = int4_array(usable_ids, nusable);
	select_values[2] = Int64GetDatum(pcar_rotation_batch_size);

	refuse_replica_mode_code(column->relid);
	pcar_restricted_begin(&r, pcar_relation_owner(column->relid));
	/* the owner's context expression runs in the session's usual mode */
	pcar_spi_execute(psprintf("SELECT ctid, %s, %s FROM ONLY %s"
							  " WHERE ctid OPERATOR(pg_catalog.>) $1"
							  "   AND " PCAR_SCHEMA ".key_id(%s)" EQ "ANY ($2)"
							  " LIMIT $3 FOR UPDATE SKIP LOCKED",
							  attname,
							  expression ? psprintf("(%s)::pg_catalog.bytea", expression) :
							  "NULL::pg_catalog.bytea",
							  relation, attname),
					 SPI_OK_SELECT, 3, select_types, select_values);

	nrows = SPI_processed;
	tids = palloc(sizeof(Datum) * Max(nrows, 1));
	new_values = palloc(sizeof(Datum) * Max(nrows, 1));
	for (uint64 i = 0; i < nrows; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		ItemPointer tid = (ItemPointer) DatumGetPointer(SPI_getbinval(tuple, desc, 1, &isnull));
		Encrypted  *value = DatumGetEncryptedP(SPI_getbinval(tuple, desc, 2, &isnull));
		Datum		context_datum = SPI_getbinval(tuple, desc, 3, &isnull);
		bytea	   *context = isnull ? NULL : DatumGetByteaPP(context_datum);
		const uint8 *ctx = context ? (const uint8 *) VARDATA_ANY(context) : NULL;
		size_t		ctx_len = context ? VARSIZE_ANY_EXHDR(context) : 0;
		const uint8 *data = ENCRYPTED_DATA(value);
		size_t		len = ENCRYPTED_LEN(value);
		DrainKey   *key;
		size_t		plaintext_len;
		uint8	   *plaintext;
		Encrypted  *reencrypted;

		ItemPointerCopy(tid, position);
		key = find_key(keys, nkeys, (int32) pcar_ciphertext_key_id(data));
		if (key == NULL || pcar_ciphertext_problem(data, len) != NULL)
			continue;

		plaintext_len = pcar_ciphertext_plaintext_len(len);
		/* both buffers first; the plaintext is wiped whatever happens next */
		plaintext = palloc(Max(plaintext_len, 1));
		reencrypted = palloc(VARHDRSZ + PCAR_OVERHEAD + plaintext_len);
		if (!pcar_ciphertext_open(plaintext, data, len, key->old_key, ctx, ctx_len))
		{
			key->failed++;
			key->failure_reason = expression ?
				"could not decrypt with the declared context" :
				stale_context ?
				"the column's context was declared when the table had another owner: declare it again with pgcrypt_at_rest.set_column_context()" :
				"could not decrypt without a context: declare the column's context with pgcrypt_at_rest.set_column_context()";
			pfree(plaintext);
			pfree(reencrypted);
			continue;
		}
		SET_VARSIZE(reencrypted, VARHDRSZ + PCAR_OVERHEAD + plaintext_len);
		seal_then_wipe((uint8 *) VARDATA(reencrypted), key, plaintext, plaintext_len,
					   ctx, ctx_len);
		pfree(plaintext);
		/* not counted toward max_encryptions: a copy of existing data, which
		 * would otherwise rotate a keyring with more values than its limit
		 * again after every drain */

		tids[nupdates] = PointerGetDatum(tid);
		new_values[nupdates] = PointerGetDatum(reencrypted);
		nupdates++;
		key->reencrypted++;
	}

	if (nupdates > 0)
	{
		Oid			update_types[2] = {TIDARRAYOID, get_array_type(encrypted_oid)};
		Datum		update_values[2];
		int			guc_level;

		update_values[0] = PointerGetDatum(construct_array(tids, nupdates, TIDOID,
														   sizeof(ItemPointerData), false,
														   TYPALIGN_SHORT));
		update_values[1] = PointerGetDatum(construct_array(new_values, nupdates, encrypted_oid,
														   -1, false, TYPALIGN_INT));

		/*
		 * Replica mode for this statement only, so that the table's user
		 * triggers and rules do not fire; tables with triggers or rules that
		 * fire in that mode were refused above.
		 */
		guc_level = NewGUCNestLevel();
		(void) set_config_option("session_replication_role", "replica",
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		pcar_spi_execute(psprintf("UPDATE ONLY %s AS t SET %s = v.value"
								  " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS v(tid, value)"
								  " WHERE t.ctid" EQ "v.tid",
								  relation, attname),
						 SPI_OK_UPDATE, 2, update_types, update_values);
		AtEOXact_GUC(false, guc_level);
	}
	pcar_restricted_end(&r);
	return nrows;
}

/*
 * One drainer at a time per database, until its transaction ends: the
 * worker's batches and drain() would otherwise collide on rotation_pass
 * while holding locks on user rows.
 */
static bool
lock_drain(bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0x70636172, 1, 2);
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

void
pcar_drain_batch(PcarDrainResult *result, List *exclude_keys, bool wait)
{
	int			nkeys;
	DrainKey   *keys;
	int			ncolumns;
	DrainColumn *columns;
	PassCursor	cursor;
	int			c;
	uint8	   *key_buffer;

	result->pass_running = false;
	result->reencrypted = 0;
	result->drained_keys = NIL;
	current_relid = InvalidOid;

	if (!lock_drain(wait))
	{
		result->pass_running = true;	/* someone else drains: try again soon */
		return;
	}
	keys = load_drain_keys(exclude_keys, &nkeys);
	read_cursor(&cursor);
	if (nkeys == 0)
	{
		if (cursor.exists)
		{
			cursor.exists = false;
			write_cursor(&cursor, false);
		}
		return;
	}

	/* a new pass starts now; its row gets this transaction's now() */
	columns = columns_of_pass(cursor.exists ? cursor.started_at : GetCurrentTransactionStartTimestamp(),
							  &ncolumns);
	key_buffer = open_drain_keys(keys, nkeys);
	PG_TRY();
	{
		if (!cursor.exists)
		{
			/* a new pass: count what there is to do, start at the first column */
			record_counts(columns, ncolumns, keys, nkeys, false, NULL);
			cursor.exists = true;
			cursor.relid = ncolumns > 0 ? columns[0].relid : InvalidOid;
			cursor.attnum = ncolumns > 0 ? columns[0].attnum : 0;
			ItemPointerSet(&cursor.after, 0, 0);
			write_cursor(&cursor, true);
		}

		/* the cursor's column, or the next one if it is gone */
		for (c = 0; c < ncolumns; c++)
			if (columns[c].relid > cursor.relid ||
				(columns[c].relid == cursor.relid && columns[c].attnum >= cursor.attnum))
				break;
		if (c < ncolumns && (columns[c].relid != cursor.relid || columns[c].attnum != cursor.attnum))
			ItemPointerSet(&cursor.after, 0, 0);

		if (c < ncolumns)
		{
			ItemPointerData position = cursor.after;
			uint64		nrows = 0;

			current_relid = columns[c].relid;
			current_attnum = columns[c].attnum;
			if (columns[c].relkind == 'r')
				nrows = reencrypt_batch(&columns[c], &position, keys, nkeys);
			record_batch(&columns[c], keys, nkeys);
			for (int k = 0; k < nkeys; k++)
				result->reencrypted += keys[k].reencrypted;

			if (nrows >= (uint64) pcar_rotation_batch_size)
			{
				/* more on this column: resume after the last row seen */
				cursor.relid = columns[c].relid;
				cursor.attnum = columns[c].attnum;
				cursor.after = position;
			}
			else if (c + 1 < ncolumns)
			{
				cursor.relid = columns[c + 1].relid;
				cursor.attnum = columns[c + 1].attnum;
				ItemPointerSet(&cursor.after, 0, 0);
			}
			else
				c = ncolumns;	/* that was the last column */
		}

		if (c >= ncolumns)
		{
			/* the pass is over: count again with a fresh snapshot */
			CommandCounterIncrement();
			record_counts(columns, ncolumns, keys, nkeys, true, &result->drained_keys);
			cursor.exists = false;
			write_cursor(&cursor, false);
		}
		else
		{
			write_cursor(&cursor, false);
			result->pass_running = true;
		}
	}
	PG_FINALLY();
	{
		pcar_secure_free(key_buffer);
	}
	PG_END_TRY();
	current_relid = InvalidOid;
}

void
pcar_drain_note_error(const char *message)
{
	PcarRestricted r;
	PassCursor	cursor;
	Oid			types[3] = {OIDOID, INT2OID, TEXTOID};
	Datum		values[3];

	/* an error outside any column is shown on a row without a table */
	values[0] = ObjectIdGetDatum(current_relid);
	values[1] = Int16GetDatum(current_attnum);
	values[2] = CStringGetTextDatum(message);

	pcar_restricted_begin(&r, pcar_store_owner());
	/* the error is shown on every key still being drained from this column */
	pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".rotation_progress AS p"
					 " (key_id, relid, attnum, last_error, last_error_at)"
					 " SELECT k.id, $1, $2, $3, pg_catalog.now() FROM " PCAR_SCHEMA ".data_key k"
					 "  WHERE k.status" EQ "'deprecated' AND k.drained_at IS NULL"
					 " ON CONFLICT (key_id, relid, attnum) DO UPDATE SET"
					 "   last_error = $3, last_error_at = pg_catalog.now()",
					 SPI_OK_INSERT, 3, types, values);
	pcar_restricted_end(&r);

	/* skip past the column for this pass; the next pass tries it again */
	read_cursor(&cursor);
	if (cursor.exists && OidIsValid(current_relid))
	{
		cursor.relid = current_relid;
		cursor.attnum = current_attnum + 1;
		ItemPointerSet(&cursor.after, 0, 0);
		write_cursor(&cursor, false);
	}
	current_relid = InvalidOid;
}
