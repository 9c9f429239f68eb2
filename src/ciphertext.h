/*
 * ciphertext.h
 *		The layout of an encrypted value:
 *
 *		version (1) | key id (4, big-endian) | nonce (24) | ciphertext | tag (16)
 *
 * The associated data is the header (version and key id) followed by the
 * caller's context, so a value cannot be relabelled with another key id or
 * moved to a row with another context.
 */
#ifndef PCAR_CIPHERTEXT_H
#define PCAR_CIPHERTEXT_H

#include "utils/memutils.h"

#include "sodium_provider.h"

#define PCAR_VERSION_XCHACHA20POLY1305	1

#define PCAR_HEADER_BYTES	5
#define PCAR_OVERHEAD		(PCAR_HEADER_BYTES + PCAR_NONCE_BYTES + PCAR_TAG_BYTES)

/*
 * Largest value accepted on the way in (text and binary input, the bytea
 * cast, encrypt()).  Its text form ("enc:", base64, NUL) stays 1 MB below
 * PostgreSQL's 1 GB allocation limit, leaving room for the rest of a COPY
 * row that holds it, so that pg_dump can write it and a restore read it.
 * Values made by earlier versions under the old, higher limit still
 * decrypt; they are only refused on the way in.
 */
#define PCAR_MAX_TEXT_BYTES		(MaxAllocSize - 1024 * 1024)
#define PCAR_MAX_VALUE_BYTES	((PCAR_MAX_TEXT_BYTES - 5) / 4 * 3)
#define PCAR_MAX_PLAINTEXT		(PCAR_MAX_VALUE_BYTES - PCAR_OVERHEAD)

/* Why a byte string is not a well-formed value, or NULL when it is. */
extern const char *pcar_ciphertext_problem(const uint8 *data, size_t len);

/* Validates, raising errcode with a detail saying what is wrong. */
extern void pcar_ciphertext_check(const uint8 *data, size_t len, int sqlstate);

/* pcar_ciphertext_check, and the size limit of every way in. */
extern void pcar_ciphertext_check_input(const uint8 *data, size_t len, int sqlstate);

/* Errors if a value of len bytes is over PCAR_MAX_VALUE_BYTES. */
extern void pcar_ciphertext_check_size(size_t len);

static inline uint32
pcar_ciphertext_key_id(const uint8 *data)
{
	return ((uint32) data[1] << 24) | ((uint32) data[2] << 16) |
		((uint32) data[3] << 8) | (uint32) data[4];
}

static inline size_t
pcar_ciphertext_plaintext_len(size_t len)
{
	return len - PCAR_OVERHEAD;
}

/* Writes a whole value of PCAR_OVERHEAD + plaintext_len bytes into out. */
extern void pcar_ciphertext_seal(uint8 *out, uint32 key_id, const uint8 *key,
								 const uint8 *plaintext, size_t plaintext_len,
								 const uint8 *context, size_t context_len);

/* Returns false when the value does not authenticate under key and context. */
extern bool pcar_ciphertext_open(uint8 *plaintext, const uint8 *data, size_t len,
								 const uint8 *key,
								 const uint8 *context, size_t context_len);

#endif							/* PCAR_CIPHERTEXT_H */
