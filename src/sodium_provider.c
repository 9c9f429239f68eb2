/*
 * sodium_provider.c
 *		Thin wrappers over libsodium; no other file includes sodium.h for
 *		cryptography, so the algorithms in use can be read off this file.
 *		The one exception is a server's public key: secret_file.c derives it,
 *		for the server through this file and for the command-line programs
 *		directly, so that both derive it the same way.
 *
 * Decrypting short values has a fast path.  libsodium 1.0.18 computes the
 * ChaCha20 blocks of a short message one at a time; the same construction
 * (HChaCha20 subkey, ChaCha20-IETF block 0 as the Poly1305 key, Poly1305
 * over ad || pad || ct || pad || lengths, keystream from block 1), built
 * from libsodium's own primitives with a single keystream call, lets its
 * 4-block SIMD code run and saves about a sixth of the cost per row.  It is
 * byte-for-byte the same algorithm: encryption always uses libsodium's
 * AEAD, so every round trip checks one against the other, and the
 * postmaster compares the two at load and keeps libsodium's alone if they
 * ever differ.
 */
#include "postgres.h"

#include <sodium.h>

#include "secret_file.h"
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

/* Longest ciphertext body (without tag) the fast path handles. */
#define FAST_MAX_MESSAGE	192
#define FAST_KEYSTREAM		(64 + FAST_MAX_MESSAGE)

static bool fast_decrypt_enabled = false;

static const uint8 zero_pad[16];

static bool
fast_aead_decrypt(uint8 *out, const uint8 *sealed, size_t sealed_len,
				  const uint8 *ad, size_t ad_len,
				  const uint8 *nonce, const uint8 *key)
{
	size_t		message_len = sealed_len - PCAR_TAG_BYTES;
	uint8		subkey[crypto_core_hchacha20_OUTPUTBYTES];
	uint8		ietf_nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
	uint8		keystream[FAST_KEYSTREAM];
	uint8		lengths[16];
	uint8		mac[PCAR_TAG_BYTES];
	crypto_onetimeauth_poly1305_state state;
	bool		ok;

	crypto_core_hchacha20(subkey, nonce, key, NULL);
	memcpy(ietf_nonce + 4, nonce + crypto_core_hchacha20_INPUTBYTES, 8);

	/*
	 * Block 0 keys Poly1305, blocks 1.. encrypt the message.  Always four
	 * blocks: libsodium takes its 4-block SIMD path only from 256 bytes.
	 */
	crypto_stream_chacha20_ietf(keystream, sizeof(keystream), ietf_nonce, subkey);

	crypto_onetimeauth_poly1305_init(&state, keystream);
	crypto_onetimeauth_poly1305_update(&state, ad, ad_len);
	crypto_onetimeauth_poly1305_update(&state, zero_pad, (0x10 - ad_len) & 0xf);
	crypto_onetimeauth_poly1305_update(&state, sealed, message_len);
	crypto_onetimeauth_poly1305_update(&state, zero_pad, (0x10 - message_len) & 0xf);
	for (int i = 0; i < 8; i++)
	{
		lengths[i] = ((uint64) ad_len >> (8 * i)) & 0xff;
		lengths[8 + i] = ((uint64) message_len >> (8 * i)) & 0xff;
	}
	crypto_onetimeauth_poly1305_update(&state, lengths, sizeof(lengths));
	crypto_onetimeauth_poly1305_final(&state, mac);

	ok = crypto_verify_16(mac, sealed + message_len) == 0;
	if (ok)
	{
		for (size_t i = 0; i < message_len; i++)
			out[i] = sealed[i] ^ keystream[64 + i];
	}

	sodium_memzero(subkey, sizeof(subkey));
	sodium_memzero(keystream, sizeof(keystream));
	sodium_memzero(&state, sizeof(state));
	sodium_memzero(mac, sizeof(mac));
	return ok;
}

/*
 * Encrypts with libsodium and decrypts with the fast path at every length it
 * handles, with and without associated data; a tampered tag must fail.
 */
static bool
fast_decrypt_self_test(void)
{
	uint8		key[PCAR_DATA_KEY_BYTES];
	uint8		nonce[PCAR_NONCE_BYTES];
	uint8		ad[37];
	uint8		message[FAST_MAX_MESSAGE];
	uint8		sealed[FAST_MAX_MESSAGE + PCAR_TAG_BYTES];
	uint8		opened[FAST_MAX_MESSAGE];
	bool		ok = true;

	for (size_t len = 0; len <= FAST_MAX_MESSAGE && ok; len++)
	{
		size_t		ad_len = len % sizeof(ad);

		randombytes_buf(key, sizeof(key));
		randombytes_buf(nonce, sizeof(nonce));
		randombytes_buf(ad, sizeof(ad));
		randombytes_buf(message, len);
		pcar_aead_encrypt(sealed, message, len, ad, ad_len, nonce, key);

		ok = fast_aead_decrypt(opened, sealed, len + PCAR_TAG_BYTES, ad, ad_len, nonce, key) &&
			memcmp(opened, message, len) == 0;
		sealed[len] ^= 1;
		ok = ok && !fast_aead_decrypt(opened, sealed, len + PCAR_TAG_BYTES, ad, ad_len, nonce, key);
	}
	sodium_memzero(key, sizeof(key));
	sodium_memzero(message, sizeof(message));
	sodium_memzero(opened, sizeof(opened));
	return ok;
}

void
pcar_sodium_init(void)
{
	if (sodium_init() < 0)
		ereport(FATAL,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libsodium")));

	fast_decrypt_enabled = fast_decrypt_self_test();
	if (!fast_decrypt_enabled)
		ereport(WARNING,
				(errmsg("pgcrypt_at_rest: the fast decryption path disagrees with libsodium and is disabled"),
				 errdetail("Decryption uses libsodium's AEAD alone, which is slower for short values.")));
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

	if (fast_decrypt_enabled && sealed_len >= PCAR_TAG_BYTES &&
		sealed_len - PCAR_TAG_BYTES <= FAST_MAX_MESSAGE)
	{
		if (fast_aead_decrypt(out, sealed, sealed_len, ad, ad_len, nonce, key))
			return true;
		if (sealed_len > PCAR_TAG_BYTES)
			sodium_memzero(out, sealed_len - PCAR_TAG_BYTES);
		return false;
	}

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
	pcar_secret_public_key(public_key, secret_key);
}

/*
 * A Curve25519 point of small order gives the same shared secret whatever
 * the other side's key: sealing to it would protect nothing.  Multiplying
 * it by a random scalar gives the all-zero point, which libsodium refuses.
 */
bool
pcar_public_key_is_low_order(const uint8 *public_key)
{
	uint8		scalar[crypto_scalarmult_SCALARBYTES];
	uint8		shared[crypto_scalarmult_BYTES];
	bool		low_order;

	randombytes_buf(scalar, sizeof(scalar));
	low_order = crypto_scalarmult(shared, scalar, public_key) != 0;
	sodium_memzero(scalar, sizeof(scalar));
	sodium_memzero(shared, sizeof(shared));
	return low_order;
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
	static bool lock_failure_reported = false;
	void	   *ptr = sodium_malloc(len);

	if (ptr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not allocate guarded memory for key material")));

	/* sodium_malloc ignores a failure to lock; ask again and say so once */
	if (sodium_mlock(ptr, len) != 0 && !lock_failure_reported)
	{
		lock_failure_reported = true;
		ereport(WARNING,
				(errmsg("pgcrypt_at_rest could not lock key memory; keys may be written to swap"),
				 errhint("Raise the memory lock limit of the PostgreSQL server (ulimit -l, or LimitMEMLOCK in its systemd unit).")));
	}
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
