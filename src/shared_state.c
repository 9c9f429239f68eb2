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
#include "utils/timestamp.h"

#include "shared_state.h"

#define MAX_COUNTERS	1024

typedef struct WorkerSlot
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		pid;			/* 0: no worker running */
	Latch	   *latch;
	TimestampTz stop_requested_at;
	bool		stop_requested;
} WorkerSlot;

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
	Oid			start_request;	/* a database whose worker is wanted now */
	int			nslots;
	CounterSlot counters[MAX_COUNTERS];
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} PcarShared;

static PcarShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static bool wake_at_commit = false;
static bool wake_callback_registered = false;

static Size
shared_size(void)
{
	return add_size(offsetof(PcarShared, slots),
					mul_size(max_worker_processes, sizeof(WorkerSlot)));
}

static void
pcar_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("pgcrypt_at_rest", 1);
}

static void
pcar_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("pgcrypt_at_rest", shared_size(), &found);
	if (!found)
	{
		memset(shared, 0, shared_size());
		shared->lock = &(GetNamedLWLockTranche("pgcrypt_at_rest"))->lock;
		shared->nslots = max_worker_processes;
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

void
pcar_shared_wake_launcher(Oid dboid)
{
	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (OidIsValid(dboid))
		shared->start_request = dboid;
	if (shared->launcher_latch)
		SetLatch(shared->launcher_latch);
	LWLockRelease(shared->lock);
}

Oid
pcar_shared_take_start_request(void)
{
	Oid			dboid;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	dboid = shared->start_request;
	shared->start_request = InvalidOid;
	LWLockRelease(shared->lock);
	return dboid;
}

/* Caller holds the lock. */
static WorkerSlot *
find_slot(Oid dboid, bool create)
{
	WorkerSlot *free_slot = NULL;

	for (int i = 0; i < shared->nslots; i++)
	{
		if (shared->slots[i].dboid == dboid)
			return &shared->slots[i];
		if (free_slot == NULL && shared->slots[i].dboid == InvalidOid)
			free_slot = &shared->slots[i];
	}
	if (create && free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(WorkerSlot));
		free_slot->dboid = dboid;
	}
	return create ? free_slot : NULL;
}

/* No worker runs there and none is being kept away (DROP DATABASE and friends). */
bool
pcar_shared_may_start_worker(Oid dboid)
{
	WorkerSlot *slot;
	bool		may;

	LWLockAcquire(shared->lock, LW_SHARED);
	slot = find_slot(dboid, false);
	may = slot == NULL || (slot->pid == 0 && !slot->stop_requested);
	LWLockRelease(shared->lock);
	return may;
}

static void
worker_exit(int code, Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);
	WorkerSlot *slot;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	slot = find_slot(dboid, false);
	if (slot != NULL && slot->pid == MyProcPid)
	{
		/* slots are for running workers: free it, unless it keeps one away */
		if (slot->stop_requested)
		{
			slot->pid = 0;
			slot->latch = NULL;
		}
		else
			memset(slot, 0, sizeof(WorkerSlot));
	}
	LWLockRelease(shared->lock);
}

bool
pcar_shared_claim_worker_slot(Oid dboid)
{
	WorkerSlot *slot;
	bool		claimed = false;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	slot = find_slot(dboid, true);
	if (slot != NULL && slot->pid == 0 && !slot->stop_requested)
	{
		slot->pid = MyProcPid;
		slot->latch = MyLatch;
		claimed = true;
	}
	LWLockRelease(shared->lock);
	if (claimed)
		before_shmem_exit(worker_exit, ObjectIdGetDatum(dboid));
	else if (slot == NULL)
		ereport(LOG,
				(errmsg("pgcrypt_at_rest: no free worker slot for database %u", dboid),
				 errhint("More databases run rotation workers than max_worker_processes allows.")));
	return claimed;
}

void
pcar_shared_forget_databases_except(const Oid *dboids, int count)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < shared->nslots; i++)
	{
		WorkerSlot *slot = &shared->slots[i];
		bool		listed = false;

		for (int j = 0; j < count && !listed; j++)
			listed = dboids[j] == slot->dboid;
		if (slot->dboid != InvalidOid && !listed && slot->pid == 0)
			memset(slot, 0, sizeof(WorkerSlot));
	}
	LWLockRelease(shared->lock);
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
		WorkerSlot *slot;
		pid_t		pid = 0;

		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		slot = find_slot(dboid, false);
		if (slot != NULL)
		{
			slot->stop_requested = true;
			slot->stop_requested_at = GetCurrentTimestamp();
			pid = slot->pid;
		}
		LWLockRelease(shared->lock);

		if (pid == 0)
			return true;
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), timeout_ms))
			return false;
		kill(pid, SIGTERM);
		CHECK_FOR_INTERRUPTS();
		pg_usleep(10 * 1000L);
	}
}

void
pcar_shared_clear_stale_stop_requests(TimestampTz now, int naptime_ms)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < shared->nslots; i++)
	{
		WorkerSlot *slot = &shared->slots[i];

		if (slot->stop_requested &&
			TimestampDifferenceExceeds(slot->stop_requested_at, now, naptime_ms))
		{
			slot->stop_requested = false;
			if (slot->pid == 0)
				memset(slot, 0, sizeof(WorkerSlot));
		}
	}
	LWLockRelease(shared->lock);
}

/*
 * Encryptions counted by this backend and not yet added to shared memory:
 * a few keys at a time (rows often have a column per keyring), flushed at
 * transaction end or when a count or the table fills.
 */
#define PENDING_KEYS	8
#define PENDING_FLUSH	1024

static int32 pending_key_ids[PENDING_KEYS];
static uint64 pending_counts[PENDING_KEYS];
static int	npending = 0;

static void
flush_pending_encryptions(void)
{
	for (int i = 0; i < npending; i++)
		pcar_shared_add_encryptions(MyDatabaseId, pending_key_ids[i], pending_counts[i]);
	npending = 0;
}

static void
pcar_xact_callback(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;

	/* aborted encryptions count too: the nonces were used all the same */
	flush_pending_encryptions();

	if (event == XACT_EVENT_COMMIT && wake_at_commit && shared != NULL)
	{
		WorkerSlot *slot;
		bool		worker_woken = false;

		LWLockAcquire(shared->lock, LW_SHARED);
		slot = find_slot(MyDatabaseId, false);
		if (slot != NULL && slot->pid != 0 && slot->latch != NULL)
		{
			SetLatch(slot->latch);
			worker_woken = true;
		}
		LWLockRelease(shared->lock);
		if (!worker_woken)
			pcar_shared_wake_launcher(MyDatabaseId);
	}
	wake_at_commit = false;
}

static void
register_xact_callback(void)
{
	if (!wake_callback_registered)
	{
		RegisterXactCallback(pcar_xact_callback, NULL);
		wake_callback_registered = true;
	}
}

void
pcar_count_encryption(int32 key_id)
{
	int			i;

	for (i = 0; i < npending; i++)
		if (pending_key_ids[i] == key_id)
			break;
	if (unlikely(i == npending))
	{
		register_xact_callback();
		if (npending == PENDING_KEYS)
			flush_pending_encryptions();
		i = npending++;
		pending_key_ids[i] = key_id;
		pending_counts[i] = 0;
	}
	if (unlikely(++pending_counts[i] >= PENDING_FLUSH))
		flush_pending_encryptions();
}

void
pcar_wake_worker_at_commit(void)
{
	register_xact_callback();
	wake_at_commit = true;
}

void
pcar_shared_add_encryptions(Oid dboid, int32 key_id, uint64 count)
{
	CounterSlot *free_slot = NULL;
	CounterSlot *slot = NULL;

	if (shared == NULL || count == 0)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MAX_COUNTERS && slot == NULL; i++)
	{
		CounterSlot *c = &shared->counters[i];

		if (c->dboid == dboid && c->key_id == key_id)
			slot = c;
		else if (free_slot == NULL && c->dboid == InvalidOid)
			free_slot = c;
	}
	if (slot == NULL && free_slot != NULL)
	{
		slot = free_slot;
		slot->dboid = dboid;
		slot->key_id = key_id;
	}
	/* full: the count is approximate by contract; the worker frees slots */
	if (slot != NULL)
		pg_atomic_fetch_add_u64(&slot->count, count);
	LWLockRelease(shared->lock);
}

int
pcar_shared_take_encryptions(Oid dboid, int32 *key_ids, uint64 *counts, int max)
{
	int			n = 0;

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
	return n;
}
