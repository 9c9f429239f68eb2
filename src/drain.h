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
	bool		lower_priorities_left;	/* at a pass's end, keys of a lower priority wait */
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

	/*
	 * The worker (in_worker) never waits for a user's lock, bounds the
	 * table owner's code by statement_timeout_ms, leaves a failing table
	 * alone until its backoff is over, and logs failures (rate-limited);
	 * drain() waits, tries every table, and warns.
	 */
	bool		in_worker;
	bool		new_pass;		/* drain(): start a pass of its own, even mid-pass */
	int			statement_timeout_ms;	/* 0: none */
	int			naptime_seconds;	/* the backoff's unit */
	Oid			stopped_in_relid;	/* the last worker was stopped in a batch on it */

	/*
	 * A pass drains the keys of one drain priority, highest first; the next
	 * pass takes the next lower priority that has keys, then starts again
	 * from the top, so that keys that cannot drain never hold back others.
	 */
	bool		last_priority_valid;
	int32		last_priority;	/* of the last pass that ended */
} PcarDrainState;

extern void pcar_drain_state_init(PcarDrainState *state, MemoryContext context);

/*
 * The worker, once: a second timer behind the statement timeout.  A table
 * owner's code can catch the cancel the statement timeout sends (PL/pgSQL's
 * EXCEPTION WHEN query_canceled) and go on for ever; if it is still running
 * worker_statement_timeout later, the worker terminates, which no code can
 * catch, and the next worker records the failure on that table.
 */
extern void pcar_drain_register_overrun_timeout(void);

/*
 * Runs one batch of the current pass (starting a pass if none is under
 * way), in the caller's transaction.  Keys in exclude_keys are left alone.
 * In the worker, returns at once (pass_running set) if another transaction
 * is draining this database, and skips a table another session keeps
 * locked (the pass does not drain its keys).  A batch that fails on a table
 * is rolled back alone: the failure is recorded (rotation_failure,
 * rotation_status) and the pass moves on to the next table.
 */
extern void pcar_drain_batch(PcarDrainState *state, PcarDrainResult *result, List *exclude_keys);

/*
 * After a batch's transaction aborted, in a new one: notes the error on the
 * column the batch was working on and moves the pass past that column.
 */
extern void pcar_drain_note_error(PcarDrainState *state, const char *message);

#endif							/* PCAR_DRAIN_H */
