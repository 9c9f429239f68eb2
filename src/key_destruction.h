/*
 * key_destruction.h
 *		Destroying a deprecated key once no value needs it.
 */
#ifndef PCAR_KEY_DESTRUCTION_H
#define PCAR_KEY_DESTRUCTION_H

#include "nodes/pg_list.h"

/* Worker: a pass found no value under these keys; start a round for each. */
extern void pcar_destruction_schedule(List *key_ids);

/* Worker: keys in a round, which passes leave alone. */
extern List *pcar_destruction_round_keys(void);

/* Worker, in a transaction: finish a round whose wait is over; returns keys destroyed. */
extern List *pcar_destruction_step(void);

/* SQL: the same protocol, waiting for older transactions; returns destroyed ids. */
extern List *pcar_destroy_drained_keys(void);

#endif							/* PCAR_KEY_DESTRUCTION_H */
