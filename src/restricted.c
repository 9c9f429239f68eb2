/*
 * restricted.c
 *		See restricted.h.  An error anywhere is safe: transaction (or
 *		subtransaction) abort restores the role and unwinds the settings.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "restricted.h"

void
pcar_as_role_begin(PcarRestricted *r, Oid role)
{
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
pcar_as_role_end(PcarRestricted *r)
{
	/* also undoes any SET the role's code made */
	AtEOXact_GUC(false, r->guc_nest_level);
	SetUserIdAndSecContext(r->saved_userid, r->saved_sec_context);
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
