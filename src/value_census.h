/*
 * value_census.h
 *		Counting a table's encrypted values per key by reading its heap.
 */
#ifndef PCAR_VALUE_CENSUS_H
#define PCAR_VALUE_CENSUS_H

#include "storage/lockdefs.h"

#include "storage/itemptr.h"
#include "utils/snapshot.h"

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

/*
 * Calls visit for every row of columns[0]'s table that the snapshot sees
 * and whose column columns[c] holds values under key_id: with the column,
 * the row's tid and how many values.  Waits for the table's lock (ACCESS
 * SHARE, held until the transaction ends), as a SELECT would.
 */
typedef void (*PcarRowVisitor) (const PcarColumn *column, ItemPointer tid, int32 values, void *arg);
extern PcarCensusResult pcar_census_rows(const PcarColumn *columns, int ncolumns, int32 key_id,
										 Snapshot snapshot, PcarRowVisitor visit, void *arg);

/*
 * Locks a table, true once it is; false if another session holds it and
 * either !wait, or the wait ran past lock_timeout (the drain and the counts
 * treat that as a table they cannot get to now, not as their own failure).
 */
extern bool pcar_lock_table(Oid relid, LOCKMODE mode, bool wait);

#endif							/* PCAR_VALUE_CENSUS_H */
