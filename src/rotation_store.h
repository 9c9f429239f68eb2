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

#endif							/* PCAR_ROTATION_STORE_H */
