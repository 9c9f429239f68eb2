/*
 * key_destruction.h
 *		Destroying a deprecated key once no value needs it.
 */
#ifndef PCAR_KEY_DESTRUCTION_H
#define PCAR_KEY_DESTRUCTION_H

#include "nodes/pg_list.h"

/*
 * The worker's rounds: keys waiting for older transactions to end before
 * their final count, and the keys whose hold it has logged.  Owned by the
 * worker, in memory that outlives its transactions.
 */
typedef struct PcarDestructionRounds
{
	MemoryContext context;
	List	   *waiting;		/* of Round, private to key_destruction.c */
	List	   *holds_logged;	/* key ids */
} PcarDestructionRounds;

extern void pcar_destruction_rounds_init(PcarDestructionRounds *rounds, MemoryContext context);

/* A pass found no value under these keys: start a round for each. */
extern void pcar_destruction_schedule(PcarDestructionRounds *rounds, List *key_ids);

/* Keys in a round, which passes leave alone. */
extern List *pcar_destruction_round_keys(PcarDestructionRounds *rounds);

/* In a transaction: finish a round whose wait is over; returns keys destroyed. */
extern List *pcar_destruction_step(PcarDestructionRounds *rounds);

/* SQL: the same protocol, waiting for older transactions; returns destroyed ids. */
extern List *pcar_destroy_drained_keys(void);

/*
 * SQL: destroys a deprecated key now, after the same wait and final count.
 * If values remain under it (total), or some columns cannot be counted, only
 * when given is true and unreadable_values equals the total; returns it.
 */
extern int64 pcar_destroy_key(int32 key_id, bool given, int64 unreadable_values);

#endif							/* PCAR_KEY_DESTRUCTION_H */
