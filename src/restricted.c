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
#include "utils/guc.h"
#include "utils/syscache.h"

#include "restricted.h"

void
pcar_restricted_begin(PcarRestricted *r, Oid role)
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
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
pcar_restricted_end(PcarRestricted *r)
{
	SPI_finish();
	AtEOXact_GUC(false, r->guc_nest_level);
	SetUserIdAndSecContext(r->saved_userid, r->saved_sec_context);
}

void
pcar_spi_execute(const char *sql, int expected, int nargs, Oid *types, Datum *values)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);

	if (rc != expected)
		elog(ERROR, "pgcrypt_at_rest query failed: %s", SPI_result_code_string(rc));
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
