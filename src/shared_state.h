/*
 * shared_state.h
 *		The extension's shared memory: the worker pool's view of every
 *		database (which has a worker, which waits for one, what a worker
 *		keeps between visits), the launcher's latch, and encryption counts
 *		not yet persisted.
 */
#ifndef PCAR_SHARED_STATE_H
#define PCAR_SHARED_STATE_H

#include "datatype/timestamp.h"

/* Databases the launcher can serve at once: beyond, it logs and skips. */
#define PCAR_MAX_DATABASES	4096

/* What a database's worker keeps from one visit to the next. */
typedef struct PcarWorkerMemo
{
	TimestampTz policies_checked_at;
	TimestampTz pass_due_at;	/* when a new drain pass is due */
	int			idle_passes;	/* passes in a row that re-encrypted nothing */
	TimestampTz hourly_reports_at;
	Oid			batch_relid;	/* a batch was under way on this table when its worker left */
	bool		last_priority_valid;	/* the drain priority of the last pass */
	int32		last_priority;
} PcarWorkerMemo;

/* One database as the rotation_workers view shows it. */
typedef struct PcarDatabaseState
{
	Oid			dboid;
	int			pid;
	const char *state;			/* running, starting, waiting, idle, stopped, no extension */
	bool		work_signalled;
	TimestampTz waiting_since;
	TimestampTz visit_started_at;
	TimestampTz visit_ended_at;
} PcarDatabaseState;

/* Called from _PG_init while preloading. */
extern void pcar_shared_state_init(void);

/* The launcher */
extern void pcar_shared_set_launcher(void);
/* Databases that exist now: new ones get an entry, gone ones lose theirs. */
extern void pcar_shared_sync_databases(const Oid *dboids, int count);

/*
 * Picks the databases to start a worker for now, at most max_workers
 * running in all (live_workers: those the launcher started that have not
 * ended yet, leaving ones included), and marks them starting; the others that are due wait,
 * signalled work first, then the longest waiting.  Returns how many to
 * start (in to_start), and in newly_waiting the databases that have just
 * waited a nap (each once per wait, to be logged).  Both arrays hold
 * PCAR_MAX_DATABASES.
 */
extern int	pcar_shared_schedule(TimestampTz now, int naptime_ms, int max_workers,
								 int live_workers, Oid *to_start, Oid *newly_waiting,
								 int *nnewly_waiting);
/* The worker could not be registered: the database waits. */
extern void pcar_shared_start_failed(Oid dboid, TimestampTz now);
/* The registered worker ended before it ran. */
extern void pcar_shared_start_ended(Oid dboid, TimestampTz now);
extern bool pcar_shared_is_starting(Oid dboid);

/* Workers */
extern bool pcar_shared_claim_worker_slot(Oid dboid, PcarWorkerMemo *memo);
/* Saves the memo; more_work puts the database first in line again. */
extern void pcar_shared_worker_leaving(Oid dboid, const PcarWorkerMemo *memo, bool more_work,
									   bool extension_missing);
/*
 * The table a batch is working on (InvalidOid: none), kept where the next
 * worker finds it if this one is stopped in the middle.
 */
extern void pcar_shared_set_batch_table(Oid dboid, Oid relid);

/* Whether work was signalled there since the last call; clears it. */
extern bool pcar_shared_take_work_signal(Oid dboid);
extern int	pcar_shared_databases_waiting(void);

/* For the rotation_workers view; returns how many were filled. */
extern int	pcar_shared_database_states(PcarDatabaseState *states, int max);

/* Asks the database's worker to exit and waits for it; true if none is left. */
extern bool pcar_shared_stop_worker(Oid dboid, int timeout_ms);
/* The launcher lifts stop requests a nap old. */
extern void pcar_shared_clear_stale_stop_requests(TimestampTz now, int naptime_ms);

/* Wakes this database's worker (or the launcher) when the transaction commits. */
extern void pcar_wake_worker_at_commit(void);

/* Called by encrypt() per value; batched per backend, flushed at transaction end. */
extern void pcar_count_encryption(int32 key_id);

/*
 * Encryption counts: backends add (false when shared memory is full: the
 * caller keeps the count), the worker takes them out to persist them in
 * its transaction, and they go back if it aborts.
 */
extern bool pcar_shared_add_encryptions(Oid dboid, int32 key_id, uint64 count);
extern int	pcar_shared_take_encryptions(Oid dboid, int32 *key_ids, uint64 *counts, int max);

#endif							/* PCAR_SHARED_STATE_H */
