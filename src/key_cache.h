/*
 * key_cache.h
 *		Per-backend cache of opened data keys and of each keyring's active key.
 */
#ifndef PCAR_KEY_CACHE_H
#define PCAR_KEY_CACHE_H

/* The opened key; raises a clear error when it cannot be used. */
extern const uint8 *pcar_key_cache_get(int32 key_id);

/* The keyring's active key id, and its opened key in *key. */
extern int32 pcar_key_cache_active(const char *keyring, size_t keyring_len,
								   const uint8 **key);

/* Queues a flush of every backend's cache, delivered when the transaction commits. */
extern void pcar_key_cache_invalidate_all(void);

#endif							/* PCAR_KEY_CACHE_H */
