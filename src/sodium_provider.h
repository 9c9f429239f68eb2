/*
 * sodium_provider.h
 *		The only interface to libsodium's cryptography: AEAD, sealed boxes,
 *		key derivation, randomness and locked memory.
 */
#ifndef PCAR_SODIUM_PROVIDER_H
#define PCAR_SODIUM_PROVIDER_H

#define PCAR_DATA_KEY_BYTES		32	/* XChaCha20-Poly1305 key */
#define PCAR_NONCE_BYTES		24
#define PCAR_TAG_BYTES			16
#define PCAR_SERVER_KEY_BYTES	32	/* X25519 secret and public keys */
#define PCAR_SEAL_OVERHEAD		48	/* ephemeral public key + MAC */
#define PCAR_SEALED_KEY_BYTES	(PCAR_DATA_KEY_BYTES + PCAR_SEAL_OVERHEAD)
#define PCAR_SEED_BYTES			32

extern void pcar_sodium_init(void);

/* XChaCha20-Poly1305-IETF; out receives ciphertext followed by the tag. */
extern void pcar_aead_encrypt(uint8 *out,
							  const uint8 *plaintext, size_t plaintext_len,
							  const uint8 *ad, size_t ad_len,
							  const uint8 *nonce, const uint8 *key);
/* Returns false when the tag does not verify; out is then wiped. */
extern bool pcar_aead_decrypt(uint8 *out,
							  const uint8 *sealed, size_t sealed_len,
							  const uint8 *ad, size_t ad_len,
							  const uint8 *nonce, const uint8 *key);

/* NaCl sealed boxes wrap data keys for a server's X25519 public key. */
extern void pcar_seal_data_key(uint8 *sealed, const uint8 *data_key,
							   const uint8 *server_public_key);
extern bool pcar_unseal_data_key(uint8 *data_key, const uint8 *sealed,
								 const uint8 *server_public_key,
								 const uint8 *server_secret_key);

extern void pcar_public_key_from_secret(uint8 *public_key, const uint8 *secret_key);
/* True for a point of small order, which no key should be sealed to. */
extern bool pcar_public_key_is_low_order(const uint8 *public_key);

/* Kernel randomness: one system call per request. */
extern void pcar_random_bytes(uint8 *buf, size_t len);
/* Deterministic ChaCha20 expansion of a seed, for the buffered nonce pool. */
extern void pcar_expand_seed(uint8 *buf, size_t len, const uint8 *seed);

/* Locked, guarded memory for secrets; pcar_secure_free wipes before freeing. */
extern void *pcar_secure_alloc(size_t len);
extern void pcar_secure_free(void *ptr);
extern void pcar_wipe(void *ptr, size_t len);

#endif							/* PCAR_SODIUM_PROVIDER_H */
