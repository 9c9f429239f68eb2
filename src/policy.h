/*
 * policy.h
 *		Rotation policies (rotate_after, max_encryptions) and the encryption
 *		counts they need.
 */
#ifndef PCAR_POLICY_H
#define PCAR_POLICY_H

/* Worker, in a transaction: writes counts from shared memory to data_key. */
extern void pcar_persist_encryption_counts(void);

/* Worker, in a transaction: rotates keyrings whose policy says so; true if any. */
extern bool pcar_apply_rotation_policies(void);

/* Worker: logs each policy that is due but waits for a key still draining. */
extern void pcar_log_waiting_policies(void);

#endif							/* PCAR_POLICY_H */
