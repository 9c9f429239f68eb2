/*
 * key_destruction.c
 *		When a pass finds no value under a deprecated key, the key is not
 *		destroyed at once: a transaction that began before the pass ended may
 *		still commit a value under it (INSERT ... SELECT copying ciphertext,
 *		an encrypt() under a cache not yet invalidated).  So a round:
 *
 *		1. note every transaction running now (with or without a snapshot);
 *		2. wait until each has ended (the worker polls; SQL callers block);
 *		3. count the key's values again with a fresh snapshot.
 *
 * The count reads every table's heap directly (value_census.c), counting
 * every row version some snapshot may still read, in every column whose
 * type can hold encrypted values at any depth.  A column it cannot read (a
 * foreign or temporary table, a range over encrypted, a table another
 * session keeps locked) counts as values: the key stays.
 *
 * Some keys are held whatever the count says (_destruction_hold() in SQL,
 * shown in rotation_status): every key while Citus is installed, as the
 * values in shards on other nodes cannot be counted here, and keys restored
 * from a dump until confirm_restore() says the restore is complete, as a
 * restore loads tables in no fixed order and the key tables may arrive
 * before the values.
 *
 * A round that counts none marks the key drained (drained_at) the first
 * time; a round that ends destroy_grace or more after drained_at destroys
 * it: its sealed copies are deleted in the same transaction as the count,
 * and its row stays as a tombstone.  A round that counts values clears
 * drained_at, and draining resumes.  Backups and point-in-time recovery
 * need keys for as long as they are kept: destroy_grace is that window.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "encrypted_columns.h"
#include "guc.h"
#include "key_destruction.h"
#include "key_store.h"
#include "rotation_store.h"
#include "value_census.h"

typedef struct Round
{
	int32		key_id;
	int			nvxids;
	VirtualTransactionId *vxids;
} Round;

static Round *
start_round(int32 key_id, MemoryContext context)
{
	MemoryContext old = MemoryContextSwitchTo(context);
	Round	   *round = palloc(sizeof(Round));
	VirtualTransactionId *running;

	round->key_id = key_id;
	/* every transaction of this database, even one between statements */
	running = GetCurrentVirtualXIDs(InvalidTransactionId, false, false, PROC_IN_VACUUM,
									&round->nvxids);
	round->vxids = palloc(sizeof(VirtualTransactionId) * Max(round->nvxids, 1));
	memcpy(round->vxids, running, sizeof(VirtualTransactionId) * round->nvxids);
	MemoryContextSwitchTo(old);
	return round;
}

static bool
round_waits_over(Round *round, bool wait)
{
	for (int i = 0; i < round->nvxids; i++)
	{
		if (!VirtualTransactionIdIsValid(round->vxids[i]))
			continue;
		if (!VirtualXactLock(round->vxids[i], wait))
			return false;
		SetInvalidVirtualTransactionId(round->vxids[i]);
	}
	return true;
}

/* Locks a table for the census, until the transaction ends. */
static bool
lock_for_count(Oid relid, bool wait)
{
	if (!wait)
		return ConditionalLockRelationOid(relid, AccessShareLock);
	LockRelationOid(relid, AccessShareLock);
	return true;
}

/*
 * Versions of rows under the key that any snapshot may still read, in every
 * column that can hold encrypted values; -1 when some cannot be counted.
 *
 * The count must see every table at one moment.  Tables counted one after
 * the other, each unlocked once counted, let a transaction copy values into
 * a table already counted and then TRUNCATE or drop the source, which
 * leaves no row version behind: the values would go uncounted.  So every
 * table is locked first and stays locked until the key is destroyed (in the
 * same transaction), the list of tables is read again until no new one
 * appears, and only then is the snapshot taken and are the heaps read.
 * Copies made by plain INSERT and DELETE are row versions the count sees.
 */
static int64
count_key_values(int32 key_id, bool wait)
{
	int			ncolumns;
	PcarColumn *columns;
	List	   *locked = NIL;
	int64		total = 0;
	const char *reason;

	for (int attempt = 0;; attempt++)
	{
		bool		new_table = false;

		columns = pcar_encrypted_columns(&ncolumns);
		for (int c = 0; c < ncolumns; c++)
		{
			if (!pcar_column_is_readable(&columns[c], &reason))
				return -1;
			if (list_member_oid(locked, columns[c].relid))
				continue;
			if (!lock_for_count(columns[c].relid, wait))
				return -1;
			locked = lappend_oid(locked, columns[c].relid);
			new_table = true;
		}
		if (!new_table)
			break;
		/* tables keep appearing: count again at the next round */
		if (attempt == 10)
			return -1;
	}

	/* after the locks: an MVCC snapshot of our own holds back what may count as dead */
	PushActiveSnapshot(GetTransactionSnapshot());
	for (int c = 0; c < ncolumns && total >= 0;)
	{
		int			n = 1;
		int64	   *counts;
		PcarCensusResult census;

		while (c + n < ncolumns && columns[c + n].relid == columns[c].relid)
			n++;
		counts = palloc0(sizeof(int64) * n);
		census = pcar_census_table(&columns[c], n, &key_id, 1, counts, PCAR_CENSUS_NOT_DEAD, wait);
		if (census == PCAR_CENSUS_BUSY || census == PCAR_CENSUS_UNSUPPORTED)
			total = -1;
		else
			for (int j = 0; j < n; j++)
				total += counts[j];
		pfree(counts);
		c += n;
	}
	PopActiveSnapshot();
	return total;
}

/*
 * True if the key is held, saying why: to the worker's log once per key
 * (rounds given), or as a NOTICE to whoever called destroy_drained_keys().
 */
static bool
held(int32 key_id, PcarDestructionRounds *rounds)
{
	char	   *hold = pcar_store_destruction_hold(key_id);

	if (hold == NULL)
		return false;
	if (rounds == NULL || !list_member_int(rounds->holds_logged, key_id))
	{
		ereport(rounds ? LOG : NOTICE,
				(errmsg("pgcrypt_at_rest does not destroy key %d: %s", key_id, hold)));
		if (rounds != NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(rounds->context);

			rounds->holds_logged = lappend_int(rounds->holds_logged, key_id);
			MemoryContextSwitchTo(old);
		}
	}
	return true;
}

/* Counts afresh; marks drained, destroys, or sends the key back to draining. */
static bool
finish_round(int32 key_id, bool wait, PcarDestructionRounds *rounds)
{
	int64		remaining;

	if (held(key_id, rounds))
		return false;
	remaining = count_key_values(key_id, wait);

	/* -1: a foreign or temporary table may hold some; keep the key */
	if (remaining != 0)
	{
		pcar_store_set_drained(key_id, false, 0);
		return false;
	}
	if (pcar_store_set_drained(key_id, true, pcar_destroy_grace))
	{
		pcar_store_destroy_key(key_id);
		pcar_progress_forget_key(key_id);
		return true;
	}
	return false;
}

void
pcar_destruction_rounds_init(PcarDestructionRounds *rounds, MemoryContext context)
{
	rounds->context = context;
	rounds->waiting = NIL;
	rounds->holds_logged = NIL;
}

void
pcar_destruction_schedule(PcarDestructionRounds *rounds, List *key_ids)
{
	ListCell   *cell;

	foreach(cell, key_ids)
	{
		int32		key_id = lfirst_int(cell);

		if (!list_member_int(pcar_destruction_round_keys(rounds), key_id))
		{
			MemoryContext old = MemoryContextSwitchTo(rounds->context);

			rounds->waiting = lappend(rounds->waiting, start_round(key_id, rounds->context));
			MemoryContextSwitchTo(old);
		}
	}
}

List *
pcar_destruction_round_keys(PcarDestructionRounds *rounds)
{
	List	   *keys = NIL;
	ListCell   *cell;

	foreach(cell, rounds->waiting)
		keys = lappend_int(keys, ((Round *) lfirst(cell))->key_id);
	return keys;
}

/*
 * At most one round is finished per call (its count scans every table), and
 * it leaves the list before it is finished: if that fails, the round is
 * dropped, and the key's next pass starts another.
 */
List *
pcar_destruction_step(PcarDestructionRounds *rounds)
{
	List	   *due = pcar_store_keys_past_grace(pcar_destroy_grace);
	ListCell   *cell;
	Round	   *ready = NULL;
	List	   *destroyed = NIL;

	/* drained keys whose grace is over get their final round */
	pcar_destruction_schedule(rounds, due);

	foreach(cell, rounds->waiting)
	{
		Round	   *round = lfirst(cell);

		if (round_waits_over(round, false))
		{
			ready = round;
			rounds->waiting = foreach_delete_current(rounds->waiting, cell);
			break;
		}
	}
	if (ready != NULL)
	{
		int32		key_id = ready->key_id;

		pfree(ready->vxids);
		pfree(ready);
		if (finish_round(key_id, false, rounds))
			destroyed = lappend_int(destroyed, key_id);
	}
	return destroyed;
}

List *
pcar_destroy_drained_keys(void)
{
	List	   *destroyed = NIL;
	List	   *candidates = NIL;
	ListCell   *cell;

	/* it waits for every other transaction: one waiting on our locks would deadlock */
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("destroy_drained_keys() must run in a transaction that has written nothing"),
				 errdetail("It waits for every other transaction, and one waiting for this transaction's locks would deadlock."),
				 errhint("Commit first: run drain() and destroy_drained_keys() as separate statements, outside a transaction block.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("destroy_drained_keys() must run at the READ COMMITTED isolation level"),
				 errdetail("It counts the remaining values with a fresh snapshot after waiting for older transactions.")));

	/*
	 * Keys with values now are not waited for.  That first count runs in a
	 * subtransaction rolled back at once, to let go of its table locks: a
	 * transaction we then wait for could be waiting for them in turn.
	 */
	foreach(cell, pcar_store_deprecated_keys())
	{
		int32		key_id = lfirst_int(cell);
		MemoryContext context = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;
		int64		count;

		if (held(key_id, NULL))
			continue;
		BeginInternalSubTransaction(NULL);
		count = count_key_values(key_id, true);
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
		if (count == 0)
			candidates = lappend_int(candidates, key_id);
	}

	/* one wait for every transaction running now, then the final counts */
	if (candidates != NIL)
		(void) round_waits_over(start_round(linitial_int(candidates), CurrentMemoryContext), true);
	foreach(cell, candidates)
	{
		int32		key_id = lfirst_int(cell);

		if (finish_round(key_id, true, NULL))
			destroyed = lappend_int(destroyed, key_id);
	}
	return destroyed;
}
