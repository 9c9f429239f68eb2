/*
 * value_census.h
 *		Counting a table's encrypted values per key by reading its heap.
 */
#ifndef PCAR_VALUE_CENSUS_H
#define PCAR_VALUE_CENSUS_H

#include "encrypted_columns.h"

typedef enum PcarCensusMode
{
	PCAR_CENSUS_VISIBLE,		/* rows a fresh snapshot sees: what is left */
	PCAR_CENSUS_NOT_DEAD		/* every version some snapshot may still read */
} PcarCensusMode;

typedef enum PcarCensusResult
{
	PCAR_CENSUS_COUNTED,
	PCAR_CENSUS_GONE,			/* the table was dropped: nothing is in it */
	PCAR_CENSUS_BUSY,			/* locked by another session, and not waiting */
	PCAR_CENSUS_UNSUPPORTED		/* not the heap access method */
} PcarCensusResult;

/*
 * Adds to counts[c * nkeys + k] the values under key_ids[k] in columns[c],
 * all columns of one table.  With wait false, a table another session has
 * locked (ACCESS EXCLUSIVE) is not waited for: PCAR_CENSUS_BUSY.  The table
 * stays locked (ACCESS SHARE) until the transaction ends, so a count spanning
 * tables is not undone by a TRUNCATE or DROP behind it.
 */
extern PcarCensusResult pcar_census_table(const PcarColumn *columns, int ncolumns,
										  const int32 *key_ids, int nkeys, int64 *counts,
										  PcarCensusMode mode, bool wait);

#endif							/* PCAR_VALUE_CENSUS_H */
