/*
 * encrypted_columns.h
 *		Which columns of which tables can hold encrypted values.
 */
#ifndef PCAR_ENCRYPTED_COLUMNS_H
#define PCAR_ENCRYPTED_COLUMNS_H

#include "access/attnum.h"

#include "encrypted_values.h"

typedef struct PcarColumn
{
	Oid			relid;
	AttrNumber	attnum;
	Oid			typid;
	char		relkind;		/* 'r', 'm' or 'f' */
	char		relpersistence;
	PcarHolding holding;		/* PCAR_HOLDS_VALUES or PCAR_HOLDS_OPAQUE */
} PcarColumn;

/*
 * Every column of a table, materialized view or foreign table (outside the
 * extension's schema) whose type can hold an encrypted value at any depth,
 * in (table OID, column number) order.  Reads the catalogs only.
 */
extern PcarColumn *pcar_encrypted_columns(int *ncolumns);

/*
 * Whether the worker can read this column's values from the table's heap:
 * not a foreign or temporary table, not a range over encrypted.  While a
 * column cannot be read, no deprecated key is destroyed; *reason says why.
 */
extern bool pcar_column_is_readable(const PcarColumn *column, const char **reason);

#endif							/* PCAR_ENCRYPTED_COLUMNS_H */
