/*
 * restricted.h
 *		Running as another role in a security-restricted context with pinned
 *		settings: how the extension runs SQL on its tables (as their owner,
 *		spi_session.c) and how the rotation worker touches a user's table (as
 *		the table's owner).
 *
 * The rule this serves: no code a table's owner wrote (index expressions
 * and predicates, CHECK constraints, domain constraints, generated columns,
 * context expressions) runs with more rights than that owner, nor with
 * settings that loosen its checks: search_path is pg_catalog, pg_temp,
 * session_replication_role is origin and lo_compat_privileges is off,
 * whatever the caller's session or the server says.  Other settings are
 * the running session's, as for VACUUM and ANALYZE.
 * Where the extension only needs to read a user table, it reads the heap
 * directly and runs no user code at all (value_census.c).
 */
#ifndef PCAR_RESTRICTED_H
#define PCAR_RESTRICTED_H

typedef struct PcarRestricted
{
	Oid			saved_userid;
	int			saved_sec_context;
	int			guc_nest_level;
} PcarRestricted;

/*
 * Switches to role (a table's owner, whose code will run, or the owner of
 * the extension's tables) in a security-restricted context and pins the
 * settings.
 */
extern void pcar_as_role_begin(PcarRestricted *r, Oid role);
/* Restores the role, the context and every setting. */
extern void pcar_as_role_end(PcarRestricted *r);

extern Oid	pcar_relation_owner(Oid relid);

#endif							/* PCAR_RESTRICTED_H */
