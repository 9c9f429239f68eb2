/*
 * rotation_store.h
 *		The rotation bookkeeping: where the current pass stands
 *		(rotation_pass) and what is left, done and impossible per key and
 *		column (rotation_progress, behind the rotation_status view).  The
 *		only module that runs SQL on those two tables.
 */
#ifndef PCAR_ROTATION_STORE_H
#define PCAR_ROTATION_STORE_H

#include "access/attnum.h"
#include "nodes/pg_list.h"
#include "storage/itemptr.h"
#include "utils/timestamp.h"

/* Where the pass in progress stands: at most one, per database. */
typedef struct PcarPassCursor
{
	bool		exists;			/* false: no pass under way */
	Oid			relid;
	AttrNumber	attnum;
	ItemPointerData after;		/* resume after this row of the column's table */
	TimestampTz started_at;		/* identifies the pass */
	int32		priority;		/* the drain priority whose keys the pass drains */
} PcarPassCursor;

extern void pcar_pass_read(PcarPassCursor *cursor);
/* Starts (new_pass), moves or, for !cursor->exists, ends the pass. */
extern void pcar_pass_write(const PcarPassCursor *cursor, bool new_pass);

/*
 * A count of the values under each key in one column.  At a pass's end
 * (pass_end) what is left is what could not be re-encrypted, and reasons[k],
 * when not NULL, says why; at its start the last pass's findings stand
 * until redone.
 */
extern void pcar_progress_counted(Oid relid, AttrNumber attnum, int nkeys, const int32 *key_ids,
								  const int64 *counts, bool pass_end, const char *const *reasons);

/* What one batch did in a column for one key. */
extern void pcar_progress_batch(Oid relid, AttrNumber attnum, int32 key_id, int64 reencrypted,
								int64 unrotatable, const char *unrotatable_reason);

/*
 * Something every key in key_ids must show for a column (an error, why it
 * cannot be counted); InvalidOid for no particular column.
 */
extern void pcar_progress_note(Oid relid, AttrNumber attnum, int nkeys, const int32 *key_ids,
							   const char *message);

/* A destroyed key has no progress left to show. */
extern void pcar_progress_forget_key(int32 key_id);

/*
 * A table whose batch failed waits before it is tried again: a nap after
 * the first failure, twice as long after each further one, up to 64 naps.
 * Records the failure; returns true when it should be logged (the first
 * time, when the error changes, and after 2, 4, 8... failures in a row), so
 * that a table failing forever writes a few lines, not one per retry.
 */
extern bool pcar_failure_record(Oid relid, const char *message, int naptime_seconds);

/* A batch on the table succeeded: it is tried at once from now on. */
extern void pcar_failure_forget(Oid relid);
/*
 * At a pass's start: the failures and progress of tables dropped (or left
 * without encrypted columns) since are forgotten.
 */
extern void pcar_forget_tables_except(const Oid *relids, int nrelids);

/*
 * Tables whose last batch failed (an OID list, in the caller's context);
 * those still waiting for their next try in *backing_off.
 */
extern List *pcar_failing_tables(List **backing_off);

#endif							/* PCAR_ROTATION_STORE_H */
