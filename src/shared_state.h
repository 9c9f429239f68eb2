/*
 * shared_state.h
 *		The extension's shared memory: one slot per database's rotation
 *		worker, the launcher's latch, and encryption counts not yet persisted.
 */
#ifndef PCAR_SHARED_STATE_H
#define PCAR_SHARED_STATE_H

#include "datatype/timestamp.h"

/* Called from _PG_init while preloading. */
extern void pcar_shared_state_init(void);

/* The launcher */
extern void pcar_shared_set_launcher(void);
extern void pcar_shared_wake_launcher(Oid dboid);
/* Database whose worker should be started now (InvalidOid if none); clears it. */
extern Oid	pcar_shared_take_start_request(void);

/* Worker slots; each database has at most one worker. */
extern bool pcar_shared_may_start_worker(Oid dboid);
extern bool pcar_shared_claim_worker_slot(Oid dboid);
extern void pcar_shared_forget_databases_except(const Oid *dboids, int count);
/* Asks the database's worker to exit and waits for it; true if none is left. */
extern bool pcar_shared_stop_worker(Oid dboid, int timeout_ms);
/* The launcher lifts stop requests a nap old. */
extern void pcar_shared_clear_stale_stop_requests(TimestampTz now, int naptime_ms);

/* Wakes this database's worker (or the launcher) when the transaction commits. */
extern void pcar_wake_worker_at_commit(void);

/* Called by encrypt() per value; batched per backend, flushed at transaction end. */
extern void pcar_count_encryption(int32 key_id);

/* Encryption counts: backends add, the worker drains them into data_key. */
extern void pcar_shared_add_encryptions(Oid dboid, int32 key_id, uint64 count);
extern int	pcar_shared_take_encryptions(Oid dboid, int32 *key_ids, uint64 *counts, int max);

#endif							/* PCAR_SHARED_STATE_H */
