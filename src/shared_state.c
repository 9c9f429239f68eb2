/*
 * shared_state.c
 *		Shared memory of pgcrypt_at_rest.
 *
 * Locking: one LWLock protects the whole structure, every access to it
 * included (the counters are atomics, but they are only read and written
 * under the lock).  It is held only to find or change a slot, never across
 * a transaction, I/O or a wait.  The per-row path of encrypt() takes no
 * lock: a backend batches its counts and adds them under the lock only
 * every 1,024 encryptions of a key, or when its transaction ends.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "shared_state.h"

#define MAX_COUNTERS	4096

/*
 * Every database the launcher serves (up to PCAR_MAX_DATABASES): its worker
 * if one runs, whether work was signalled there, since when it waits for a
 * worker, and what a worker keeps from one visit to the next.
 */
typedef struct DatabaseEntry
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		pid;			/* its worker, 0 if none runs */
	Latch	   *latch;
	bool		starting;		/* the launcher registered a worker, not yet running */
	bool		stop_requested; /* DROP DATABASE and friends: no worker for now */
	TimestampTz stop_requested_at;
	bool		work_signalled; /* woken (rotation, deprecation...) since its last look */
	bool		extension_missing;	/* the last visit found no extension */
	int			missing_naps;	/* visits of such a database are this many naps apart */
	TimestampTz waiting_since;	/* due, but no worker free (0: not waiting) */
	bool		waiting_logged;
	TimestampTz visit_started_at;
	TimestampTz visit_ended_at;
	PcarWorkerMemo memo;
} DatabaseEntry;

typedef struct CounterSlot
{
	Oid			dboid;			/* InvalidOid: free */
	int32		key_id;
	pg_atomic_uint64 count;		/* encryptions not yet written to data_key */
} CounterSlot;

typedef struct PcarShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			nwaiting;		/* databases due that wait for a worker */
	CounterSlot counters[MAX_COUNTERS];
	DatabaseEntry databases[PCAR_MAX_DATABASES];
} PcarShared;

static PcarShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static bool wake_at_commit = false;
static bool wake_callback_registered = false;

static void
pcar_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(PcarShared));
	RequestNamedLWLockTranche("pgcrypt_at_rest", 1);
}

static void
pcar_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("pgcrypt_at_rest", sizeof(PcarShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(PcarShared));
		shared->lock = &(GetNamedLWLockTranche("pgcrypt_at_rest"))->lock;
		for (int i = 0; i < MAX_COUNTERS; i++)
			pg_atomic_init_u64(&shared->counters[i].count, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
pcar_shared_state_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pcar_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pcar_shmem_startup;
}

static void
launcher_exit(int code, Datum arg)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->launcher_pid = 0;
	shared->launcher_latch = NULL;
	LWLockRelease(shared->lock);
}

void
pcar_shared_set_launcher(void)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->launcher_pid = MyProcPid;
	shared->launcher_latch = MyLatch;
	LWLockRelease(shared->lock);
	before_shmem_exit(launcher_exit, (Datum) 0);
}

/* Caller holds the lock (exclusively to create). */
static DatabaseEntry *
find_database(Oid dboid, bool create)
{
	DatabaseEntry *free_entry = NULL;

	for (int i = 0; i < PCAR_MAX_DATABASES; i++)
	{
		if (shared->databases[i].dboid == dboid)
			return &shared->databases[i];
		if (free_entry == NULL && shared->databases[i].dboid == InvalidOid)
			free_entry = &shared->databases[i];
	}
	if (create && free_entry != NULL)
	{
		memset(free_entry, 0, sizeof(DatabaseEntry));
		free_entry->dboid = dboid;
		free_entry->missing_naps = 1;
	}
	return create ? free_entry : NULL;
}

static bool
worker_running(const DatabaseEntry *entry)
{
	return entry->pid != 0 || entry->starting;
}

/* Work was signalled in a database: its worker, or the launcher, is woken. */
static void
signal_work(Oid dboid)
{
	DatabaseEntry *entry;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = find_database(dboid, true);
	if (entry != NULL)
	{
		entry->work_signalled = true;
		entry->extension_missing = false;	/* CREATE EXTENSION signals too */
		entry->missing_naps = 1;
	}
	if (entry != NULL && entry->pid != 0 && entry->latch != NULL)
		SetLatch(entry->latch);
	else if (shared->launcher_latch)
		SetLatch(shared->launcher_latch);
	LWLockRelease(shared->lock);
}

void
pcar_shared_sync_databases(const Oid *dboids, int count)
{
	bool		full = false;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	/* gone databases first, so that their entries can be reused */
	for (int i = 0; i < PCAR_MAX_DATABASES; i++)
	{
		DatabaseEntry *entry = &shared->databases[i];
		bool		listed = false;

		for (int j = 0; j < count && !listed; j++)
			listed = dboids[j] == entry->dboid;
		if (entry->dboid != InvalidOid && !listed && !worker_running(entry) &&
			!entry->stop_requested)
			memset(entry, 0, sizeof(DatabaseEntry));
	}
	for (int j = 0; j < count; j++)
		full |= find_database(dboids[j], true) == NULL;
	LWLockRelease(shared->lock);

	if (full)
		ereport(LOG,
				(errmsg("pgcrypt_at_rest serves at most %d databases; the others get no rotation worker",
						PCAR_MAX_DATABASES)));
}

typedef struct DueDatabase
{
	Oid			dboid;
	TimestampTz rank;			/* earlier goes first */
} DueDatabase;

static int
compare_due(const void *a, const void *b)
{
	TimestampTz ra = ((const DueDatabase *) a)->rank;
	TimestampTz rb = ((const DueDatabase *) b)->rank;

	return ra < rb ? -1 : ra > rb ? 1 : 0;
}

int
pcar_shared_schedule(TimestampTz now, int naptime_ms, int max_workers, int live_workers,
					 Oid *to_start, Oid *newly_waiting, int *nnewly_waiting)
{
	DueDatabase *due = palloc(sizeof(DueDatabase) * PCAR_MAX_DATABASES);
	int			ndue = 0;
	int			running = 0;
	int			nstart = 0;

	*nnewly_waiting = 0;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < PCAR_MAX_DATABASES; i++)
	{
		DatabaseEntry *entry = &shared->databases[i];
		TimestampTz since;

		if (entry->dboid == InvalidOid)
			continue;
		if (worker_running(entry))
		{
			running++;
			continue;
		}
		if (entry->stop_requested)
			continue;
		/* a visit a nap after the last one ended (longer where nothing is installed) */
		since = TimestampTzPlusMilliseconds(entry->visit_ended_at,
											(int64) naptime_ms * (entry->extension_missing ? entry->missing_naps : 1));
		if (!entry->work_signalled && since > now)
		{
			entry->waiting_since = 0;
			entry->waiting_logged = false;
			continue;
		}
		if (entry->waiting_since != 0)
			since = entry->waiting_since;
		else if (entry->work_signalled || since < now - (int64) naptime_ms * 1000)
			since = now;
		due[ndue].dboid = entry->dboid;
		/* signalled work goes first, unless the others have waited a nap longer */
		due[ndue].rank = entry->work_signalled ? since - (int64) naptime_ms * 1000 : since;
		ndue++;
	}
	qsort(due, ndue, sizeof(DueDatabase), compare_due);
	/* a worker that has left holds its slot until the postmaster reaps it */
	running = Max(running, live_workers);

	for (int d = 0; d < ndue; d++)
	{
		DatabaseEntry *entry = find_database(due[d].dboid, false);

		if (running < max_workers)
		{
			entry->starting = true;
			entry->work_signalled = false;
			entry->waiting_since = 0;
			entry->waiting_logged = false;
			to_start[nstart++] = entry->dboid;
			running++;
			continue;
		}
		if (entry->waiting_since == 0)
			entry->waiting_since = now;
		/* said once per wait, when it has waited a nap */
		if (!entry->waiting_logged &&
			TimestampDifferenceExceeds(entry->waiting_since, now, naptime_ms))
		{
			entry->waiting_logged = true;
			newly_waiting[(*nnewly_waiting)++] = entry->dboid;
		}
	}
	/*
	 * Those that make a running worker leave: not a database known to lack
	 * the extension (CREATE EXTENSION there signals work, which counts).
	 */
	shared->nwaiting = 0;
	for (int d = 0; d < ndue; d++)
	{
		DatabaseEntry *entry = find_database(due[d].dboid, false);

		if (!entry->starting && (!entry->extension_missing || entry->work_signalled))
			shared->nwaiting++;
	}

	/* idle workers make room for the waiting: wake them to look */
	if (shared->nwaiting > 0)
		for (int i = 0; i < PCAR_MAX_DATABASES; i++)
			if (shared->databases[i].pid != 0 && shared->databases[i].latch != NULL)
				SetLatch(shared->databases[i].latch);
	LWLockRelease(shared->lock);
	pfree(due);
	return nstart;
}

void
pcar_shared_start_failed(Oid dboid, TimestampTz now)
{
	DatabaseEntry *entry;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = find_database(dboid, false);
	if (entry != NULL && entry->starting && entry->pid == 0)
	{
		entry->starting = false;
		if (entry->waiting_since == 0)
			entry->waiting_since = now;
	}
	LWLockRelease(shared->lock);
}

void
pcar_shared_start_ended(Oid dboid, TimestampTz now)
{
	DatabaseEntry *entry;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = find_database(dboid, false);
	/* the worker left before it ran (it could not connect, say) */
	if (entry != NULL && entry->starting && entry->pid == 0)
	{
		entry->starting = false;
		entry->visit_ended_at = now;
	}
	LWLockRelease(shared->lock);
}

bool
pcar_shared_is_starting(Oid dboid)
{
	DatabaseEntry *entry;
	bool		starting;

	LWLockAcquire(shared->lock, LW_SHARED);
	entry = find_database(dboid, false);
	starting = entry != NULL && entry->starting && entry->pid == 0;
	LWLockRelease(shared->lock);
	return starting;
}

static void
worker_exit(int code, Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	DatabaseEntry *entry;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = find_database(dboid, false);
	if (entry != NULL && entry->pid == MyProcPid)
	{
		entry->pid = 0;
		entry->latch = NULL;
		entry->visit_ended_at = GetCurrentTimestamp();
	}
	if (shared->launcher_latch)
		SetLatch(shared->launcher_latch);
	LWLockRelease(shared->lock);
}

bool
pcar_shared_claim_worker_slot(Oid dboid, PcarWorkerMemo *memo)
{
	DatabaseEntry *entry;
	bool		claimed = false;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = find_database(dboid, true);
	if (entry != NULL && entry->pid == 0 && !entry->stop_requested)
	{
		entry->pid = MyProcPid;
		entry->latch = MyLatch;
		entry->starting = false;
		entry->visit_started_at = GetCurrentTimestamp();
		*memo = entry->memo;
		entry->memo.batch_relid = InvalidOid;
		claimed = true;
	}
	else if (entry != NULL && entry->pid == 0)
		entry->starting = false;
	LWLockRelease(shared->lock);
	if (claimed)
		before_shmem_exit(worker_exit, ObjectIdGetDatum(dboid));
	return claimed;
}

void
pcar_shared_worker_leaving(Oid dboid, const PcarWorkerMemo *memo, bool more_work,
						   bool extension_missing)
{
	DatabaseEntry *entry;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = find_database(dboid, false);
	if (entry != NULL && entry->pid == MyProcPid)
	{
		entry->memo = *memo;
		entry->memo.batch_relid = InvalidOid;	/* it left between batches */
		if (more_work)
			entry->work_signalled = true;
		if (extension_missing && !entry->work_signalled)
			entry->missing_naps = entry->extension_missing ? Min(entry->missing_naps * 2, 16) : 1;
		entry->extension_missing = extension_missing;
	}
	LWLockRelease(shared->lock);
}

void
pcar_shared_set_batch_table(Oid dboid, Oid relid)
{
	DatabaseEntry *entry;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = find_database(dboid, false);
	if (entry != NULL && entry->pid == MyProcPid)
		entry->memo.batch_relid = relid;
	LWLockRelease(shared->lock);
}

bool
pcar_shared_take_work_signal(Oid dboid)
{
	DatabaseEntry *entry;
	bool		signalled = false;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = find_database(dboid, false);
	if (entry != NULL)
	{
		signalled = entry->work_signalled;
		entry->work_signalled = false;
	}
	LWLockRelease(shared->lock);
	return signalled;
}

int
pcar_shared_databases_waiting(void)
{
	int			n;

	LWLockAcquire(shared->lock, LW_SHARED);
	n = shared->nwaiting;
	LWLockRelease(shared->lock);
	return n;
}

int
pcar_shared_database_states(PcarDatabaseState *states, int max)
{
	int			n = 0;

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < PCAR_MAX_DATABASES && n < max; i++)
	{
		DatabaseEntry *entry = &shared->databases[i];
		PcarDatabaseState *state = &states[n];

		if (entry->dboid == InvalidOid)
			continue;
		state->dboid = entry->dboid;
		state->pid = entry->pid;
		/* one without the extension only waits for a free worker: not a wait */
		state->state = entry->pid != 0 ? "running" :
			entry->starting ? "starting" :
			entry->extension_missing && !entry->work_signalled ? "no extension" :
			entry->waiting_since != 0 ? "waiting" :
			entry->stop_requested ? "stopped" : "idle";
		state->work_signalled = entry->work_signalled;
		state->waiting_since = entry->waiting_since;
		state->visit_started_at = entry->visit_started_at;
		state->visit_ended_at = entry->visit_ended_at;
		n++;
	}
	LWLockRelease(shared->lock);
	return n;
}

/*
 * DROP DATABASE and friends refuse while anyone is connected, our worker
 * included: ask it to leave and keep the launcher from starting another
 * until the statement is over (stop_requested is cleared a nap later).
 */
bool
pcar_shared_stop_worker(Oid dboid, int timeout_ms)
{
	TimestampTz start = GetCurrentTimestamp();

	if (shared == NULL)
		return true;
	for (;;)
	{
		DatabaseEntry *entry;
		pid_t		pid = 0;
		bool		starting = false;

		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		entry = find_database(dboid, true);
		if (entry != NULL)
		{
			entry->stop_requested = true;
			entry->stop_requested_at = GetCurrentTimestamp();
			pid = entry->pid;
			starting = entry->starting;
		}
		LWLockRelease(shared->lock);

		/* a worker still starting finds stop_requested and leaves */
		if (pid == 0 && !starting)
			return true;
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), timeout_ms))
			return false;
		if (pid != 0)
			kill(pid, SIGTERM);
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10 * 1000L);
	}
}

void
pcar_shared_clear_stale_stop_requests(TimestampTz now, int naptime_ms)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < PCAR_MAX_DATABASES; i++)
	{
		DatabaseEntry *entry = &shared->databases[i];

		if (entry->stop_requested &&
			TimestampDifferenceExceeds(entry->stop_requested_at, now, naptime_ms))
			entry->stop_requested = false;
	}
	LWLockRelease(shared->lock);
}

/*
 * Encryptions counted by this backend and not yet added to shared memory,
 * flushed at transaction end or when a count reaches PENDING_FLUSH.  Counts
 * are exact (a per-key cap relies on them): what does not fit in shared
 * memory stays here until it does, and what the worker took out but could
 * not persist goes back when its transaction aborts.
 */
#define PENDING_FLUSH	1024

typedef struct PendingCounts
{
	int			n;
	int			allocated;
	int32	   *key_ids;
	uint64	   *counts;
} PendingCounts;

static PendingCounts pending;	/* counted by this backend */
static PendingCounts taken;		/* taken out by this transaction, to persist */
static bool exit_callback_registered = false;

static int
pending_slot(PendingCounts *set, int32 key_id)
{
	for (int i = 0; i < set->n; i++)
		if (set->key_ids[i] == key_id)
			return i;
	if (set->n == set->allocated)
	{
		int			allocated = Max(set->allocated * 2, 8);

		if (set->allocated == 0)
		{
			set->key_ids = MemoryContextAlloc(TopMemoryContext, sizeof(int32) * allocated);
			set->counts = MemoryContextAlloc(TopMemoryContext, sizeof(uint64) * allocated);
		}
		else
		{
			set->key_ids = repalloc(set->key_ids, sizeof(int32) * allocated);
			set->counts = repalloc(set->counts, sizeof(uint64) * allocated);
		}
		set->allocated = allocated;
	}
	set->key_ids[set->n] = key_id;
	set->counts[set->n] = 0;
	return set->n++;
}

/* Adds to shared memory what fits; what does not stays in the set. */
static void
flush_counts(PendingCounts *set, Oid dboid)
{
	int			kept = 0;

	for (int i = 0; i < set->n; i++)
	{
		if (pcar_shared_add_encryptions(dboid, set->key_ids[i], set->counts[i]))
			continue;
		set->key_ids[kept] = set->key_ids[i];
		set->counts[kept] = set->counts[i];
		kept++;
	}
	set->n = kept;
}

static void
pcar_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;

	/* counts the worker took out are in data_key now, or go back */
	if (event == XACT_EVENT_ABORT)
		for (int i = 0; i < taken.n; i++)
		{
			int			slot = pending_slot(&pending, taken.key_ids[i]);	/* may grow the arrays */

			pending.counts[slot] += taken.counts[i];
		}
	taken.n = 0;

	/* aborted encryptions count too: the nonces were used all the same */
	flush_counts(&pending, MyDatabaseId);

	if (event == XACT_EVENT_COMMIT && wake_at_commit && shared != NULL)
		signal_work(MyDatabaseId);
	wake_at_commit = false;
}

/* A backend leaving adds what it still counts; it cannot keep it any longer. */
static void
flush_at_exit(int code, Datum arg)
{
	flush_counts(&pending, MyDatabaseId);
	if (pending.n > 0)
		ereport(LOG,
				(errmsg("pgcrypt_at_rest lost the encryption counts of %d keys: shared memory was full",
						pending.n)));
}

static void
register_xact_callback(void)
{
	if (!wake_callback_registered)
	{
		RegisterXactCallback(pcar_xact_callback, NULL);
		wake_callback_registered = true;
	}
	if (!exit_callback_registered && shared != NULL)
	{
		before_shmem_exit(flush_at_exit, (Datum) 0);
		exit_callback_registered = true;
	}
}

void
pcar_count_encryption(int32 key_id)
{
	static int	last = 0;
	int			i = last;

	if (unlikely(i >= pending.n || pending.key_ids[i] != key_id))
	{
		register_xact_callback();
		i = pending_slot(&pending, key_id);
		last = i;
	}
	if (unlikely(++pending.counts[i] >= PENDING_FLUSH))
		flush_counts(&pending, MyDatabaseId);
}

void
pcar_wake_worker_at_commit(void)
{
	register_xact_callback();
	wake_at_commit = true;
}

bool
pcar_shared_add_encryptions(Oid dboid, int32 key_id, uint64 count)
{
	CounterSlot *free_slot = NULL;
	CounterSlot *slot = NULL;
	int			used = 0;

	if (shared == NULL || count == 0)
		return true;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MAX_COUNTERS; i++)
	{
		CounterSlot *c = &shared->counters[i];

		if (c->dboid == dboid && c->key_id == key_id)
			slot = c;
		else if (free_slot == NULL && c->dboid == InvalidOid)
			free_slot = c;
		if (c->dboid != InvalidOid)
			used++;
	}
	if (slot == NULL && free_slot != NULL)
	{
		slot = free_slot;
		slot->dboid = dboid;
		slot->key_id = key_id;
	}
	if (slot != NULL)
		pg_atomic_fetch_add_u64(&slot->count, count);
	LWLockRelease(shared->lock);

	/* filling up: this database's worker makes room */
	if (slot == NULL || used >= MAX_COUNTERS * 3 / 4)
		signal_work(dboid);
	return slot != NULL;
}

int
pcar_shared_take_encryptions(Oid dboid, int32 *key_ids, uint64 *counts, int max)
{
	int			n = 0;

	Assert(IsTransactionState() && dboid == MyDatabaseId);
	register_xact_callback();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MAX_COUNTERS && n < max; i++)
	{
		CounterSlot *c = &shared->counters[i];

		if (c->dboid != dboid)
			continue;
		key_ids[n] = c->key_id;
		counts[n] = pg_atomic_exchange_u64(&c->count, 0);
		c->dboid = InvalidOid;
		if (counts[n] > 0)
			n++;
	}
	LWLockRelease(shared->lock);

	/* until this transaction commits, they are ours to give back */
	for (int i = 0; i < n; i++)
	{
		int			slot = pending_slot(&taken, key_ids[i]);	/* may grow the arrays */

		taken.counts[slot] += counts[i];
	}
	return n;
}
