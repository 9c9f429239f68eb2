/*
 * drain.h
 *		Re-encrypting values under deprecated keys, one batch at a time.
 */
#ifndef PCAR_DRAIN_H
#define PCAR_DRAIN_H

#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "encrypted_columns.h"

typedef struct PcarDrainResult
{
	bool		pass_running;	/* call again: the pass is not finished */
	int64		reencrypted;	/* values re-encrypted by this call */
	List	   *drained_keys;	/* at a pass's end, keys with no value left (int list) */
} PcarDrainResult;

/*
 * What a caller keeps from one batch to the next (the worker for its life,
 * drain() for its call), in memory of its own: none of it is lost when a
 * batch's transaction aborts.
 */
typedef struct PcarDrainState
{
	MemoryContext context;		/* for pass_columns */
	PcarColumn *pass_columns;	/* the current pass's columns, found when it started */
	int			pass_ncolumns;
	TimestampTz pass_columns_for;	/* the pass they belong to */
	Oid			relid;			/* the column a batch is working on, or InvalidOid */
	AttrNumber	attnum;
} PcarDrainState;

extern void pcar_drain_state_init(PcarDrainState *state, MemoryContext context);

/*
 * Runs one batch of the current pass (starting a pass if none is under
 * way), in the caller's transaction.  Keys in exclude_keys are left alone.
 * Without wait, returns at once (pass_running set) if another transaction
 * is draining this database, and skips a table another session keeps
 * locked (the pass does not drain its keys).
 */
extern void pcar_drain_batch(PcarDrainState *state, PcarDrainResult *result, List *exclude_keys,
							 bool wait);

/*
 * After a batch's transaction aborted, in a new one: notes the error on the
 * column the batch was working on and moves the pass past that column.
 */
extern void pcar_drain_note_error(PcarDrainState *state, const char *message);

#endif							/* PCAR_DRAIN_H */
