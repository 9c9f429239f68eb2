/*
 * encrypted_columns.c
 *		Finding the columns that can hold encrypted values: of the type, of a
 *		domain over it, of an array or composite type containing it at any
 *		depth (encrypted_values.c decides), in tables, partitions,
 *		inheritance children, materialized views and foreign tables.
 *
 * The catalog query runs as the key tables' owner with search_path pinned;
 * it reads catalogs only, so no code of any table's owner runs.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"

#include "encrypted_columns.h"
#include "encrypted_values.h"
#include "pgcrypt_at_rest.h"
#include "restricted.h"
#include "spi_session.h"

PcarColumn *
pcar_encrypted_columns(int *ncolumns)
{
	PcarSpiSession session;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(get_namespace_oid(PCAR_SCHEMA, false))};
	PcarColumn *columns;
	PcarValueWalk *walk = pcar_value_walk_create();

	pcar_spi_begin(&session);
	/* built-in types (OIDs below FirstNormalObjectId) hold no encrypted value */
	pcar_spi_execute("SELECT a.attrelid, a.attnum, a.atttypid, c.relkind, c.relpersistence"
					 "  FROM pg_catalog.pg_attribute a"
					 "  JOIN pg_catalog.pg_class c ON c.oid" PCAR_EQ "a.attrelid"
					 " WHERE c.relkind" PCAR_EQ "ANY ('{r,m,f}')"
					 "   AND c.relnamespace" PCAR_OP("<>") "$1"
					 "   AND a.attnum" PCAR_OP(">") "0 AND NOT a.attisdropped"
					 "   AND a.atttypid" PCAR_OP(">=") "16384::pg_catalog.oid"
					 " ORDER BY 1, 2",
					 SPI_OK_SELECT, 1, types, values);
	columns = MemoryContextAlloc(session.caller_context, sizeof(PcarColumn) * Max(SPI_processed, 1));
	*ncolumns = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		PcarColumn *column = &columns[*ncolumns];
		bool		isnull;

		column->relid = DatumGetObjectId(pcar_spi_datum(i, 1, &isnull));
		column->attnum = DatumGetInt16(pcar_spi_datum(i, 2, &isnull));
		column->typid = DatumGetObjectId(pcar_spi_datum(i, 3, &isnull));
		column->relkind = DatumGetChar(pcar_spi_datum(i, 4, &isnull));
		column->relpersistence = DatumGetChar(pcar_spi_datum(i, 5, &isnull));
		column->holding = pcar_type_holding(walk, column->typid);
		if (column->holding != PCAR_HOLDS_NOTHING)
			(*ncolumns)++;
	}
	pcar_spi_end(&session);
	return columns;
}

bool
pcar_column_is_readable(const PcarColumn *column, const char **reason)
{
	*reason = NULL;
	if (column->relkind == RELKIND_FOREIGN_TABLE)
		*reason = "a foreign table: its values cannot be counted, so no deprecated key is destroyed while it has this column";
	else if (column->relpersistence == RELPERSISTENCE_TEMP)
		*reason = "a temporary table: its values cannot be counted, so no deprecated key is destroyed while it exists";
	else if (column->holding == PCAR_HOLDS_OPAQUE)
		*reason = "a range over encrypted values: they cannot be counted, so no deprecated key is destroyed while this column exists";
	return *reason == NULL;
}
