/*
 * sodium_provider.c
 *		Thin wrappers over libsodium; no other file includes sodium.h for
 *		cryptography, so the algorithms in use can be read off this file.
 */
#include "postgres.h"

#include <sodium.h>

#include "sodium_provider.h"

StaticAssertDecl(PCAR_DATA_KEY_BYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
				 "data key size");
StaticAssertDecl(PCAR_NONCE_BYTES == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
				 "nonce size");
StaticAssertDecl(PCAR_TAG_BYTES == crypto_aead_xchacha20poly1305_ietf_ABYTES,
				 "tag size");
StaticAssertDecl(PCAR_SEAL_OVERHEAD == crypto_box_SEALBYTES, "seal overhead");
StaticAssertDecl(PCAR_SERVER_KEY_BYTES == crypto_box_SECRETKEYBYTES &&
				 PCAR_SERVER_KEY_BYTES == crypto_box_PUBLICKEYBYTES,
				 "server key size");
StaticAssertDecl(PCAR_SEED_BYTES == randombytes_SEEDBYTES, "seed size");

void
pcar_sodium_init(void)
{
	if (sodium_init() < 0)
		ereport(FATAL,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libsodium")));
}

void
pcar_aead_encrypt(uint8 *out, const uint8 *plaintext, size_t plaintext_len,
				  const uint8 *ad, size_t ad_len,
				  const uint8 *nonce, const uint8 *key)
{
	unsigned long long out_len;

	crypto_aead_xchacha20poly1305_ietf_encrypt(out, &out_len,
											   plaintext, plaintext_len,
											   ad, ad_len, NULL, nonce, key);
}

bool
pcar_aead_decrypt(uint8 *out, const uint8 *sealed, size_t sealed_len,
				  const uint8 *ad, size_t ad_len,
				  const uint8 *nonce, const uint8 *key)
{
	unsigned long long out_len;

	if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, &out_len, NULL,
												   sealed, sealed_len,
												   ad, ad_len, nonce, key) != 0)
	{
		if (sealed_len > PCAR_TAG_BYTES)
			sodium_memzero(out, sealed_len - PCAR_TAG_BYTES);
		return false;
	}
	return true;
}

void
pcar_seal_data_key(uint8 *sealed, const uint8 *data_key, const uint8 *server_public_key)
{
	if (crypto_box_seal(sealed, data_key, PCAR_DATA_KEY_BYTES, server_public_key) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("could not seal a data key for a server public key")));
}

bool
pcar_unseal_data_key(uint8 *data_key, const uint8 *sealed,
					 const uint8 *server_public_key, const uint8 *server_secret_key)
{
	return crypto_box_seal_open(data_key, sealed, PCAR_SEALED_KEY_BYTES,
								server_public_key, server_secret_key) == 0;
}

void
pcar_public_key_from_secret(uint8 *public_key, const uint8 *secret_key)
{
	crypto_scalarmult_base(public_key, secret_key);
}

void
pcar_random_bytes(uint8 *buf, size_t len)
{
	randombytes_buf(buf, len);
}

void
pcar_expand_seed(uint8 *buf, size_t len, const uint8 *seed)
{
	randombytes_buf_deterministic(buf, len, seed);
}

void *
pcar_secure_alloc(size_t len)
{
	void	   *ptr = sodium_malloc(len);

	if (ptr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not allocate locked memory for key material"),
				 errhint("Raise the memory lock limit (ulimit -l) of the PostgreSQL server.")));
	return ptr;
}

void
pcar_secure_free(void *ptr)
{
	/* sodium_free wipes the region before unmapping it */
	if (ptr != NULL)
		sodium_free(ptr);
}

void
pcar_wipe(void *ptr, size_t len)
{
	sodium_memzero(ptr, len);
}
