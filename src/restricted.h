/*
 * restricted.h
 *		Running SQL as another role in a security-restricted context with a
 *		pinned search_path: how the key store reads its tables and how the
 *		rotation worker touches a user's table (as the table's owner).
 */
#ifndef PCAR_RESTRICTED_H
#define PCAR_RESTRICTED_H

typedef struct PcarRestricted
{
	Oid			saved_userid;
	int			saved_sec_context;
	int			guc_nest_level;
	MemoryContext caller_context;	/* results must outlive SPI's memory */
} PcarRestricted;

/* Switches to role, pins search_path and connects SPI. */
extern void pcar_restricted_begin(PcarRestricted *r, Oid role);
/* Disconnects SPI and restores the role, context and settings. */
extern void pcar_restricted_end(PcarRestricted *r);

/*
 * Runs one statement with $n parameters through a plan saved per SQL text;
 * errors unless SPI returns expected.  nulls as for SPI_execute_plan.
 */
extern void pcar_spi_execute(const char *sql, int expected, int nargs, Oid *types, Datum *values);
extern void pcar_spi_execute_nulls(const char *sql, int expected, int nargs, Oid *types,
								   Datum *values, const char *nulls);

extern Oid	pcar_relation_owner(Oid relid);

#endif							/* PCAR_RESTRICTED_H */
