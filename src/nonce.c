/*
 * nonce.c
 *		Random nonces without a system call per value.
 *
 * Asking the kernel for every nonce costs more than the encryption of a
 * short value, so nonces are drawn from a pool: a fresh 32-byte seed from
 * the kernel, expanded with ChaCha20, refilled (with a new seed) when spent.
 *
 * A pool copied into a forked child would repeat the parent's nonces.
 * Backends are forked from the postmaster, which never draws a nonce, so
 * each starts without a pool; a child forked from a backend (an untrusted
 * procedural language, say) is covered by MADV_WIPEONFORK: the kernel hands
 * it zeroed pages, whose missing marker forces a refill from the kernel.
 * Where the kernel lacks that flag, the pool checks getpid() on every draw.
 * A used nonce is wiped from the pool.  Nonces are public, so the pool needs
 * no locked memory.
 */
#include "postgres.h"

#include <sys/mman.h>
#include <unistd.h>

#include "nonce.h"
#include "sodium_provider.h"

#define NONCES_PER_REFILL	2730	/* one kernel call per 2 730 nonces */
#define POOL_MARKER			UINT64CONST(0x70636172206e6f6e)

typedef struct NoncePool
{
	uint64		marker;			/* POOL_MARKER while filled; zero in a forked child */
	pid_t		filled_by;		/* checked only without MADV_WIPEONFORK */
	size_t		next;			/* offset of the next unused nonce */
	uint8		nonces[PCAR_NONCE_BYTES * NONCES_PER_REFILL];
} NoncePool;

static NoncePool *pool = NULL;
static bool pool_wiped_on_fork = false;

static void
nonce_pool_refill(void)
{
	uint8		seed[PCAR_SEED_BYTES];

	if (pool == NULL)
	{
		void	   *region = mmap(NULL, sizeof(NoncePool), PROT_READ | PROT_WRITE,
								  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (region == MAP_FAILED)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not allocate the nonce pool: %m")));
#ifdef MADV_WIPEONFORK
		pool_wiped_on_fork = madvise(region, sizeof(NoncePool), MADV_WIPEONFORK) == 0;
#endif
		pool = region;
	}

	pcar_random_bytes(seed, sizeof(seed));
	pcar_expand_seed(pool->nonces, sizeof(pool->nonces), seed);
	pcar_wipe(seed, sizeof(seed));

	pool->next = 0;
	pool->filled_by = getpid();
	pool->marker = POOL_MARKER;
}

void
pcar_nonce_generate(uint8 *nonce)
{
	if (unlikely(pool == NULL || pool->marker != POOL_MARKER ||
				 pool->next + PCAR_NONCE_BYTES > sizeof(pool->nonces) ||
				 (!pool_wiped_on_fork && pool->filled_by != getpid())))
		nonce_pool_refill();

	memcpy(nonce, pool->nonces + pool->next, PCAR_NONCE_BYTES);
	pcar_wipe(pool->nonces + pool->next, PCAR_NONCE_BYTES);
	pool->next += PCAR_NONCE_BYTES;
}
