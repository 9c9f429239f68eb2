/*
 * restricted.c
 *		See restricted.h.  An error anywhere is safe: transaction (or
 *		subtransaction) abort restores the role and unwinds the settings.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/syscache.h"

#include "restricted.h"

static void
enter_role(PcarRestricted *r, Oid role)
{
	r->caller_context = CurrentMemoryContext;
	GetUserIdAndSecContext(&r->saved_userid, &r->saved_sec_context);
	SetUserIdAndSecContext(role, r->saved_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	r->guc_nest_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	/*
	 * The two superuser-only settings that would let the role's code skip
	 * checks: replica mode (foreign keys, triggers) and large-object
	 * permissions.  Set by the caller, or even for the whole server, they
	 * must not reach it.
	 */
	(void) set_config_option("session_replication_role", "origin",
							 PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("lo_compat_privileges", "off",
							 PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

void
pcar_as_role_begin(PcarRestricted *r, Oid role)
{
	enter_role(r, role);
}

void
pcar_as_role_end(PcarRestricted *r)
{
	/* also undoes any SET the role's code made */
	AtEOXact_GUC(false, r->guc_nest_level);
	SetUserIdAndSecContext(r->saved_userid, r->saved_sec_context);
}

void
pcar_restricted_begin(PcarRestricted *r, Oid role)
{
	enter_role(r, role);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
pcar_restricted_end(PcarRestricted *r)
{
	SPI_finish();
	pcar_as_role_end(r);
}

/*
 * Saved plans, one per SQL text and parameter types: the rotation worker
 * runs the same few statements every batch, and planning them again each
 * time cost as much as a fifth of its work.  PostgreSQL's plan cache
 * revalidates them after DDL (and replans for another role where row
 * security matters); the types are part of the key because a parameter of
 * the extension's own type changes OID when the extension is re-created.
 */
#define MAX_SQL_KEY 2048

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

	plan = SPI_prepare(pnstrdup(sql, strcspn(sql, "\x01")), nargs, types);
	if (plan == NULL)
		elog(ERROR, "pgcrypt_at_rest could not prepare a query: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "pgcrypt_at_rest could not keep a query plan");
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
		elog(ERROR, "pgcrypt_at_rest query failed: %s", SPI_result_code_string(rc));
}

void
pcar_spi_execute(const char *sql, int expected, int nargs, Oid *types, Datum *values)
{
	pcar_spi_execute_nulls(sql, expected, nargs, types, values, NULL);
}

Oid
pcar_relation_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}
