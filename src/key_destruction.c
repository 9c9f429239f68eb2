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
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/sinvaladt.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
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
	TimestampTz started_at;
	bool		wait_noted;		/* rotation_status says what it waits for */
} Round;

static Round *
start_round(int32 key_id, MemoryContext context)
{
	MemoryContext old = MemoryContextSwitchTo(context);
	Round	   *round = palloc(sizeof(Round));
	VirtualTransactionId *running;

	round->key_id = key_id;
	round->started_at = GetCurrentTimestamp();
	round->wait_noted = false;
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

/* Shows in rotation_status which transaction the round waits for. */
static void
note_round_wait(Round *round)
{
	int			pid = 0;
	int			waiting = 0;

	for (int i = 0; i < round->nvxids; i++)
	{
		PGPROC	   *proc;

		if (!VirtualTransactionIdIsValid(round->vxids[i]))
			continue;
		waiting++;
		proc = pid == 0 ? BackendIdGetProc(round->vxids[i].backendId) : NULL;
		if (proc != NULL)
			pid = proc->pid;
	}
	pcar_progress_note(InvalidOid, 0, 1, &round->key_id,
					   psprintf("destruction waits for %d transaction(s) that began before the key was found drained%s%s%s: see pg_stat_activity",
								waiting, pid ? " (one is pid " : "", pid ? psprintf("%d", pid) : "",
								pid ? ")" : ""));
}

/* Locks a table for the census, until the transaction ends. */
static bool
lock_for_count(Oid relid, bool wait)
{
	return pcar_lock_table(relid, AccessShareLock, wait);
}

/*
 * What a count found, for destroy_key(): the values counted, the columns and
 * tables holding them, and the columns it could not count.
 */
typedef struct KeyCount
{
	int64		total;
	int			columns;
	int			tables;
	List	   *uncountable;	/* of char *: "schema.table.column (why)" */
} KeyCount;

/* Why a column cannot be counted, in a few words for a message. */
static const char *
uncountable_kind(const PcarColumn *column, PcarCensusResult census)
{
	if (census == PCAR_CENSUS_BUSY)
		return "locked by another transaction";
	if (census == PCAR_CENSUS_UNSUPPORTED)
		return "not of the heap access method";
	if (column->relkind == RELKIND_FOREIGN_TABLE)
		return "a foreign table";
	if (column->relpersistence == RELPERSISTENCE_TEMP)
		return "a temporary table";
	return "a range over encrypted values";
}

static void
note_uncountable(KeyCount *detail, const PcarColumn *column, PcarCensusResult census)
{
	Oid			namespace = get_rel_namespace(column->relid);
	char	   *table = get_rel_name(column->relid);
	char	   *attname = get_attname(column->relid, column->attnum, true);

	Assert(detail != NULL);
	if (table == NULL || attname == NULL)
		return;					/* dropped meanwhile: nothing left in it */
	/* our own temporary tables by the name we would use for them */
	detail->uncountable = lappend(detail->uncountable,
								  psprintf("%s.%s (%s)",
										   quote_qualified_identifier(isTempNamespace(namespace) ?
																	  "pg_temp" :
																	  get_namespace_name(namespace),
																	  table),
										   quote_identifier(attname),
										   uncountable_kind(column, census)));
}

/*
 * Versions of rows under the key that any snapshot may still read, in every
 * column that can hold encrypted values; -1 when some cannot be counted.
 * With detail, the columns that cannot be counted are noted there instead
 * and the others counted; -1 then only when tables kept appearing.
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
static bool locks_fit(const PcarColumn *columns, int ncolumns, int32 key_id);

static int64
count_key_values(int32 key_id, bool wait, KeyCount *detail)
{
	int			ncolumns;
	PcarColumn *columns;
	List	   *locked = NIL;
	int64		total = 0;
	const char *reason;
	int			nreadable = 0;
	Oid			last_counted = InvalidOid;

	for (int attempt = 0;; attempt++)
	{
		bool		new_table = false;

		columns = pcar_encrypted_columns(&ncolumns);
		if (!locks_fit(columns, ncolumns, key_id))
			return -1;
		for (int c = 0; c < ncolumns; c++)
		{
			if (!pcar_column_is_readable(&columns[c], &reason))
			{
				if (detail == NULL)
					return -1;
				continue;
			}
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

	/* the readable columns first, in place: the census takes a table's columns together */
	for (int c = 0; c < ncolumns; c++)
	{
		if (pcar_column_is_readable(&columns[c], &reason))
			columns[nreadable++] = columns[c];
		else
			note_uncountable(detail, &columns[c], PCAR_CENSUS_COUNTED);
	}

	/* after the locks: an MVCC snapshot of our own holds back what may count as dead */
	PushActiveSnapshot(GetTransactionSnapshot());
	for (int c = 0; c < nreadable && total >= 0;)
	{
		int			n = 1;
		int64	   *counts;
		PcarCensusResult census;

		while (c + n < nreadable && columns[c + n].relid == columns[c].relid)
			n++;
		counts = palloc0(sizeof(int64) * n);
		census = pcar_census_table(&columns[c], n, &key_id, 1, counts, PCAR_CENSUS_NOT_DEAD, wait);
		if (census == PCAR_CENSUS_BUSY || census == PCAR_CENSUS_UNSUPPORTED)
		{
			if (detail == NULL)
				total = -1;
			else
				for (int j = 0; j < n; j++)
					note_uncountable(detail, &columns[c + j], census);
		}
		else
			for (int j = 0; j < n; j++)
			{
				total += counts[j];
				if (detail != NULL && counts[j] > 0)
				{
					detail->columns++;
					if (columns[c + j].relid != last_counted)
						detail->tables++;
					last_counted = columns[c + j].relid;
				}
			}
		pfree(counts);
		c += n;
	}
	PopActiveSnapshot();
	return total;
}

/*
 * Whether the tables can all be locked at once within half the shared lock
 * table: anyone may create thousands of empty tables with an encrypted
 * column, and filling the lock table would make every session's next lock
 * fail.  Says so when not: the key stays until the lock table is larger.
 */
static bool
locks_fit(const PcarColumn *columns, int ncolumns, int32 key_id)
{
	int64		budget = (int64) max_locks_per_xact * MaxBackends / 2;
	int64		tables = 0;

	for (int c = 0; c < ncolumns; c++)
		if (c == 0 || columns[c].relid != columns[c - 1].relid)
			tables++;
	if (tables <= budget)
		return true;
	ereport(WARNING,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("pgcrypt_at_rest cannot count the values under key %d: %lld tables would have to be locked at once",
					key_id, (long long) tables),
			 errdetail("Half the shared lock table holds %lld locks.", (long long) budget),
			 errhint("Raise max_locks_per_transaction, or drop tables with encrypted columns that are not needed.")));
	return false;
}

/*
 * A first count, whose table locks are let go at once: it runs in a
 * subtransaction rolled back at once, as a transaction we then wait for
 * could be waiting for those locks in turn.  detail, if given, is filled in
 * the caller's memory.
 */
static int64
count_then_unlock(int32 key_id, KeyCount *detail)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	int64		count;

	BeginInternalSubTransaction(NULL);
	if (detail != NULL)
		MemoryContextSwitchTo(context);
	count = count_key_values(key_id, true, detail);
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(context);
	CurrentResourceOwner = owner;
	return count;
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
	remaining = count_key_values(key_id, wait, NULL);

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
		/* a nap on, say what it waits for: an idle transaction looks like nothing */
		if (!round->wait_noted &&
			TimestampDifferenceExceeds(round->started_at, GetCurrentTimestamp(),
									   pcar_worker_naptime * 1000))
		{
			note_round_wait(round);
			round->wait_noted = true;
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

/*
 * destroy_drained_keys() and destroy_key() wait for every other
 * transaction, then count with a fresh snapshot.
 */
static void
require_fresh_transaction(const char *function, const char *hint)
{
	/* one waiting on our locks would deadlock */
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s must run in a transaction that has written nothing", function),
				 errdetail("It waits for every other transaction, and one waiting for this transaction's locks would deadlock."),
				 errhint("%s", hint)));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s must run at the READ COMMITTED isolation level", function),
				 errdetail("It counts the remaining values with a fresh snapshot after waiting for older transactions.")));
}

List *
pcar_destroy_drained_keys(void)
{
	List	   *destroyed = NIL;
	List	   *candidates = NIL;
	ListCell   *cell;

	require_fresh_transaction("destroy_drained_keys()",
							  "Commit first: run drain() and destroy_drained_keys() as separate statements, outside a transaction block.");

	/* keys with values now are not waited for */
	foreach(cell, pcar_store_deprecated_keys())
	{
		int32		key_id = lfirst_int(cell);

		if (held(key_id, NULL))
			continue;
		if (count_then_unlock(key_id, NULL) == 0)
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

/*
 * destroy_key(): refuses what is not a deprecated key, or a held one; the
 * key row is locked when lock is true.
 */
static void
require_destroyable(int32 key_id, bool lock)
{
	PcarKeyStatus status;
	char		keyring[NAMEDATALEN];
	char	   *hold;

	if (!pcar_store_key_status(key_id, lock, &status, keyring))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key %d does not exist", key_id)));
	if (status == PCAR_KEY_ACTIVE)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key %d is the active key of keyring \"%s\"", key_id, keyring),
				 errdetail("Only a deprecated key can be destroyed."),
				 errhint("Deprecate it first with pgcrypt_at_rest.deprecate_key(%d), which makes a new active key, and let drain() re-encrypt its values.", key_id)));
	if (status == PCAR_KEY_DESTROYED)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key %d of keyring \"%s\" was already destroyed", key_id, keyring)));
	hold = pcar_store_destruction_hold(key_id);
	if (hold != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key %d cannot be destroyed: %s", key_id, hold),
				 errhint("A key restored from a dump is released by pgcrypt_at_rest.confirm_restore() once every table's data is restored; while Citus is installed, no key can be destroyed.")));
}

/* "a.b.c (why), d.e.f (why)", at most five, then how many more. */
static char *
uncountable_list(List *uncountable)
{
	StringInfoData text;
	ListCell   *cell;

	initStringInfo(&text);
	foreach(cell, uncountable)
	{
		if (foreach_current_index(cell) == 5)
		{
			appendStringInfo(&text, " and %d more", list_length(uncountable) - 5);
			break;
		}
		appendStringInfo(&text, "%s%s", foreach_current_index(cell) > 0 ? ", " : "",
						 (char *) lfirst(cell));
	}
	return text.data;
}

/*
 * Whether the count lets the key go, with what the caller said: at most
 * that many values lost.  A bound rather than the exact number, so that
 * whoever keeps inserting forged values cannot make every call miss.
 */
static bool
caller_agrees(const KeyCount *count, bool given, int64 unreadable_values)
{
	if (count->total == 0 && count->uncountable == NIL)
		return true;
	/* a count that failed (-1) is below any bound, and agrees to nothing */
	return given && count->total >= 0 && count->total <= unreadable_values;
}

/* The key still protects values, more than the caller said could go. */
static void
refuse_to_destroy(int32 key_id, const KeyCount *count, bool given, int64 unreadable_values)
{
	StringInfoData detail;
	long long	total = (long long) count->total;

	if (count->total < 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("could not count the values under key %d", key_id),
				 errdetail("Every table that can hold encrypted values must be locked for the count: there were too many to lock at once, one was not granted in time, or they kept being created; a warning before this error says which."),
				 errhint("Call pgcrypt_at_rest.destroy_key() again once that has passed; whatever unreadable_values says, a key is never destroyed uncounted.")));

	initStringInfo(&detail);
	if (count->total > 0)
		appendStringInfo(&detail, "They are in %d %s of %d %s.",
						 count->columns, count->columns == 1 ? "column" : "columns",
						 count->tables, count->tables == 1 ? "table" : "tables");
	if (count->uncountable != NIL)
		appendStringInfo(&detail, "%sThe values in these columns cannot be counted: %s.",
						 detail.len > 0 ? " " : "", uncountable_list(count->uncountable));
	if (given)
		appendStringInfo(&detail, " It was called with unreadable_values => %lld.",
						 (long long) unreadable_values);

	if (count->total > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg_plural("key %d still protects %lld value",
							   "key %d still protects %lld values",
							   count->total, key_id, total),
				 errdetail_internal("%s", detail.data),
				 count->uncountable == NIL ?
				 errhint("Call pgcrypt_at_rest.destroy_key(%d, unreadable_values => %lld) to destroy it anyway: those values can never be read again. pgcrypt_at_rest.rows_under_key(%d) lists them.",
						 key_id, total, key_id) :
				 errhint("Call pgcrypt_at_rest.destroy_key(%d, unreadable_values => %lld) to destroy it anyway: those values, and any under it in the columns that cannot be counted, can never be read again. pgcrypt_at_rest.rows_under_key(%d) lists them.",
						 key_id, total, key_id)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("key %d may still protect values that cannot be counted", key_id),
			 errdetail_internal("%s", detail.data),
			 errhint("Call pgcrypt_at_rest.destroy_key(%d, unreadable_values => 0) to destroy it anyway: any value under it in those columns can never be read again.",
					 key_id)));
}

/*
 * An administrator destroys a deprecated key now, values or not: the
 * protocol of destroy_drained_keys() (wait for older transactions, lock
 * every table, count every row version some snapshot may read), then, if
 * values remain or some columns cannot be counted, only when told how
 * many values become unreadable.  destroy_grace does not apply: the
 * caller asks explicitly.  Everything happens in the caller's transaction,
 * so an error leaves the key as it was.
 */
int64
pcar_destroy_key(int32 key_id, bool given, int64 unreadable_values)
{
	KeyCount	count = {0};

	require_fresh_transaction("destroy_key()",
							  "Commit first: run destroy_key() as a statement of its own, outside a transaction block.");
	require_destroyable(key_id, false);

	/* a count now, to refuse at once rather than after waiting */
	count.total = count_then_unlock(key_id, &count);
	if (!caller_agrees(&count, given, unreadable_values))
		refuse_to_destroy(key_id, &count, given, unreadable_values);

	/* every transaction running now may still write values under it */
	(void) round_waits_over(start_round(key_id, CurrentMemoryContext), true);

	memset(&count, 0, sizeof(count));
	count.total = count_key_values(key_id, true, &count);
	if (!caller_agrees(&count, given, unreadable_values))
		refuse_to_destroy(key_id, &count, given, unreadable_values);

	/*
	 * The key's row is locked from here to commit, after the count so that
	 * the worker's updates of it wait for no scan: a concurrent destroy_key()
	 * or round that destroyed it first is seen here.
	 */
	require_destroyable(key_id, true);

	/* nothing under it: drained, as the worker would have found it */
	if (count.total == 0 && count.uncountable == NIL)
		(void) pcar_store_set_drained(key_id, true, 0);
	pcar_store_destroy_key(key_id);
	pcar_progress_forget_key(key_id);

	if (count.total > 0)
		ereport(WARNING,
				(errmsg_plural("key %d destroyed: %lld value under it can never be read again",
							   "key %d destroyed: %lld values under it can never be read again",
							   count.total, key_id, (long long) count.total),
				 count.uncountable != NIL ?
				 errdetail("Nor can any value under it in these columns, which could not be counted: %s.",
						   uncountable_list(count.uncountable)) : 0));
	else if (count.uncountable != NIL)
		ereport(WARNING,
				(errmsg("key %d destroyed: any value under it in columns that could not be counted can never be read again",
						key_id),
				 errdetail("Those columns: %s.", uncountable_list(count.uncountable))));
	return count.total;
}
