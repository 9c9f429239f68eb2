/*
 * spi_session.h
 *		The one way the extension runs SQL: on its own tables, and on the
 *		catalogs, as the owner of the extension's tables, in a
 *		security-restricted context with search_path pinned (restricted.c).
 *		Every name in the SQL is schema-qualified and every operator pinned
 *		with PCAR_OP, so no object a user creates can take part.
 */
#ifndef PCAR_SPI_SESSION_H
#define PCAR_SPI_SESSION_H

#include "executor/spi.h"

#include "restricted.h"

/* An operator pinned to pg_catalog, for SQL text: PCAR_OP("<=") */
#define PCAR_OP(op)		" OPERATOR(pg_catalog." op ") "
#define PCAR_EQ			PCAR_OP("=")

typedef struct PcarSpiSession
{
	PcarRestricted restricted;
	MemoryContext caller_context;	/* for results that must outlive the session */
} PcarSpiSession;

/* One of the extension's tables, or InvalidOid (missing_ok) or an error. */
extern Oid	pcar_extension_table_oid(const char *name, bool missing_ok);

/* The role that owns the extension's tables. */
extern Oid	pcar_extension_owner(void);

/* Switches to that role, restricted, and connects SPI. */
extern void pcar_spi_begin(PcarSpiSession *session);
/* Disconnects SPI and restores the caller's role, context and settings. */
extern void pcar_spi_end(PcarSpiSession *session);

/*
 * Runs one statement with $n parameters through a plan kept per SQL text
 * and parameter types; errors unless SPI returns expected.  nulls as for
 * SPI_execute_plan.
 */
extern void pcar_spi_execute(const char *sql, int expected, int nargs, Oid *types, Datum *values);
extern void pcar_spi_execute_nulls(const char *sql, int expected, int nargs, Oid *types,
								   Datum *values, const char *nulls);

/*
 * Runs a SELECT with the latest snapshot, after absorbing pending
 * invalidations, for results a cache may keep past this transaction.  In
 * a parallel operation, which cannot take one, it reads with the active
 * snapshot and returns false: the result must not outlive the transaction.
 */
extern bool pcar_spi_select_latest(const char *sql, int nargs, Oid *types, Datum *values);

/* A column of a row of the last result (columns count from 1). */
extern Datum pcar_spi_datum(uint64 row, int column, bool *isnull);
/* The same as text, or NULL; in SPI's memory. */
extern char *pcar_spi_text(uint64 row, int column);

/* A bytea holding a copy of len bytes. */
extern Datum pcar_bytea_datum(const uint8 *data, size_t len);

#endif							/* PCAR_SPI_SESSION_H */
