/*
 * drain.h
 *		Re-encrypting values under deprecated keys, one batch at a time.
 */
#ifndef PCAR_DRAIN_H
#define PCAR_DRAIN_H

#include "nodes/pg_list.h"

typedef struct PcarDrainResult
{
	bool		pass_running;	/* call again: the pass is not finished */
	int64		reencrypted;	/* values re-encrypted by this call */
	List	   *drained_keys;	/* at a pass's end, keys with no value left (int list) */
} PcarDrainResult;

/*
 * Runs one batch of the current pass (starting a pass if none is under
 * way), in the caller's transaction.  Keys in exclude_keys are left alone.
 * Without wait, returns at once (pass_running set) if another transaction
 * is draining this database, and skips a table another session keeps
 * locked (the pass does not drain its keys).
 */
extern void pcar_drain_batch(PcarDrainResult *result, List *exclude_keys, bool wait);

/* After an error in a batch: note it on the column and move past the column. */
extern void pcar_drain_note_error(const char *message);

#endif							/* PCAR_DRAIN_H */
