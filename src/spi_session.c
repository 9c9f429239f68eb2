/*
 * spi_session.c
 *		See spi_session.h.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "pgcrypt_at_rest.h"
#include "spi_session.h"

/* The one spelling of an internal SPI failure. */
static void
spi_failed(int code) pg_attribute_noreturn();

static void
spi_failed(int code)
{
	elog(ERROR, "pgcrypt_at_rest query failed: %s", SPI_result_code_string(code));
}

Oid
pcar_extension_table_oid(const char *name, bool missing_ok)
{
	Oid			schema = get_namespace_oid(PCAR_SCHEMA, true);
	Oid			relid = OidIsValid(schema) ? get_relname_relid(name, schema) : InvalidOid;

	if (!OidIsValid(relid) && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"pgcrypt_at_rest\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION pgcrypt_at_rest.")));
	return relid;
}

Oid
pcar_extension_owner(void)
{
	return pcar_relation_owner(pcar_extension_table_oid("data_key", false));
}

void
pcar_spi_begin(PcarSpiSession *session)
{
	session->caller_context = CurrentMemoryContext;
	pcar_as_role_begin(&session->restricted, pcar_extension_owner());
	if (SPI_connect() != SPI_OK_CONNECT)
		spi_failed(SPI_ERROR_CONNECT);
}

void
pcar_spi_end(PcarSpiSession *session)
{
	SPI_finish();
	pcar_as_role_end(&session->restricted);
}

/*
 * Saved plans, one per SQL text and parameter types: the rotation worker
 * runs the same few statements every batch, and planning them again each
 * time cost as much as a fifth of its work.  PostgreSQL's plan cache
 * revalidates them after DDL (and replans for another role where row
 * security matters); the types are part of the key because a parameter of
 * the extension's own type changes OID when the extension is re-created.
 * Every statement is a constant of the extension's: the cache holds a few
 * dozen plans, and is emptied if re-created extensions ever fill it.
 */
#define MAX_SQL_KEY 2048
#define MAX_SAVED_PLANS 256

typedef struct SavedPlan
{
	char		sql[MAX_SQL_KEY];	/* hash key */
	SPIPlanPtr	plan;
} SavedPlan;

static HTAB *saved_plans = NULL;

static SPIPlanPtr
saved_plan(const char *sql, int nargs, Oid *types)
{
	SavedPlan  *entry;
	bool		found;
	SPIPlanPtr	plan;
	StringInfoData key;

	const char *sql_text = sql;

	initStringInfo(&key);
	appendStringInfoString(&key, sql);
	for (int i = 0; i < nargs; i++)
		appendStringInfo(&key, "%c%u", i == 0 ? '\x01' : ',', types[i]);
	if (key.len >= MAX_SQL_KEY)
		return NULL;
	sql = key.data;
	if (saved_plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = MAX_SQL_KEY;
		ctl.entrysize = sizeof(SavedPlan);
		saved_plans = hash_create("pgcrypt_at_rest saved plans", 64, &ctl,
								  HASH_ELEM | HASH_STRINGS);
	}
	entry = hash_search(saved_plans, sql, HASH_FIND, NULL);
	if (entry != NULL)
		return entry->plan;
	if (hash_get_num_entries(saved_plans) >= MAX_SAVED_PLANS)
	{
		HASH_SEQ_STATUS status;

		hash_seq_init(&status, saved_plans);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			SPI_freeplan(entry->plan);
			(void) hash_search(saved_plans, entry->sql, HASH_REMOVE, NULL);
		}
	}

	plan = SPI_prepare(sql_text, nargs, types);
	if (plan == NULL)
		spi_failed(SPI_result);
	if (SPI_keepplan(plan) != 0)
		spi_failed(SPI_ERROR_ARGUMENT);
	entry = hash_search(saved_plans, sql, HASH_ENTER, &found);
	entry->plan = plan;
	return plan;
}

void
pcar_spi_execute_nulls(const char *sql, int expected, int nargs, Oid *types, Datum *values,
					   const char *nulls)
{
	SPIPlanPtr	plan = saved_plan(sql, nargs, types);
	int			rc;

	if (plan != NULL)
		rc = SPI_execute_plan(plan, values, nulls, false, 0);
	else
		rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	if (rc != expected)
		spi_failed(rc);
}

void
pcar_spi_execute(const char *sql, int expected, int nargs, Oid *types, Datum *values)
{
	pcar_spi_execute_nulls(sql, expected, nargs, types, values, NULL);
}


bool
pcar_spi_select_latest(const char *sql, int nargs, Oid *types, Datum *values)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);
	bool		latest = !IsInParallelMode();
	Snapshot	snapshot;
	int			rc;

	if (plan == NULL)
		spi_failed(SPI_result);
	if (latest)
	{
		AcceptInvalidationMessages();
		snapshot = GetLatestSnapshot();
	}
	else
		snapshot = GetActiveSnapshot();
	/* read-only: no command counter increment, which parallel mode forbids */
	rc = SPI_execute_snapshot(plan, values, NULL, snapshot, InvalidSnapshot,
							  true, false, 0);
	if (rc != SPI_OK_SELECT)
		spi_failed(rc);
	return latest;
}

Datum
pcar_spi_datum(uint64 row, int column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column, isnull);
}

char *
pcar_spi_text(uint64 row, int column)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column);
}

Datum
pcar_bytea_datum(const uint8 *data, size_t len)
{
	bytea	   *result = palloc(VARHDRSZ + len);

	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), data, len);
	return PointerGetDatum(result);
}
