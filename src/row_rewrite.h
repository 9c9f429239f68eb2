/*
 * row_rewrite.h
 *		Replacing one column of a table's rows in place, the way the
 *		executor would for UPDATE, but without firing triggers or rules.
 */
#ifndef PCAR_ROW_REWRITE_H
#define PCAR_ROW_REWRITE_H

#include "executor/tuptable.h"
#include "storage/itemptr.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

typedef struct PcarRowRewrite PcarRowRewrite;

/*
 * For rows of rel (opened with RowExclusiveLock).  Call everything below as
 * the table's owner: constraints, generated columns and index expressions
 * run as the current user.
 */
extern PcarRowRewrite *pcar_row_rewrite_begin(Relation rel, AttrNumber attnum);

/*
 * Locks the row at *tid for update unless another transaction holds it.
 * Following updates made since the snapshot (at READ COMMITTED), it moves
 * *tid to the row's latest version and returns that version, or NULL.
 */
extern TupleTableSlot *pcar_row_rewrite_lock(PcarRowRewrite *rewrite, ItemPointer tid,
											 Snapshot snapshot);

/*
 * Replaces the column of the row just locked with value, then computes its
 * generated columns, checks its constraints and partition bound, and
 * inserts its index entries.  No trigger fires and no rule applies.
 */
extern void pcar_row_rewrite_update(PcarRowRewrite *rewrite, Datum value);

extern void pcar_row_rewrite_end(PcarRowRewrite *rewrite);

#endif							/* PCAR_ROW_REWRITE_H */
