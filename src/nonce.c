/*
 * nonce.c
 *		Random nonces without a system call per value.
 *
 * Asking the kernel for every nonce costs more than the encryption of a
 * short value, so nonces are drawn from a pool: a fresh 32-byte seed from
 * the kernel, expanded with ChaCha20, refilled (with a new seed) when spent.
 *
 * Every backend is forked from the postmaster, and any pool the parent had
 * filled would be copied into every child, repeating nonces across
 * sessions.  So the pool remembers the process that filled it and is
 * refilled from the kernel whenever MyProcPid (set in each child after the
 * fork) differs; the postmaster itself never draws a nonce.  A used nonce
 * is wiped from the pool so no later read of this memory can predict or
 * repeat it.
 */
#include "postgres.h"

#include "miscadmin.h"

#include "nonce.h"
#include "sodium_provider.h"

/* 2 730 nonces a refill: one kernel call costs under 1 ns per nonce */
#define NONCE_POOL_BYTES	(PCAR_NONCE_BYTES * 2730)

static uint8 *nonce_pool = NULL;
static size_t nonce_pool_next = NONCE_POOL_BYTES;
static int	nonce_pool_pid = 0;

static void
nonce_pool_refill(void)
{
	uint8		seed[PCAR_SEED_BYTES];

	if (nonce_pool == NULL)
		nonce_pool = pcar_secure_alloc(NONCE_POOL_BYTES);

	pcar_random_bytes(seed, sizeof(seed));
	pcar_expand_seed(nonce_pool, NONCE_POOL_BYTES, seed);
	pcar_wipe(seed, sizeof(seed));

	nonce_pool_next = 0;
	nonce_pool_pid = MyProcPid;
}

void
pcar_nonce_generate(uint8 *nonce)
{
	if (unlikely(nonce_pool_pid != MyProcPid ||
				 nonce_pool_next + PCAR_NONCE_BYTES > NONCE_POOL_BYTES))
		nonce_pool_refill();

	memcpy(nonce, nonce_pool + nonce_pool_next, PCAR_NONCE_BYTES);
	pcar_wipe(nonce_pool + nonce_pool_next, PCAR_NONCE_BYTES);
	nonce_pool_next += PCAR_NONCE_BYTES;
}
