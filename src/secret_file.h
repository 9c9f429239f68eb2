/*
 * secret_file.h
 *		The server secret file's format, reading it, and the public key it
 *		gives: shared by the server (server_key.c) and the command-line
 *		programs (src/cli/).
 *
 * Plain C and libsodium only: no PostgreSQL header, no palloc, no ereport,
 * so that the programs link neither the backend nor libpgcommon.  Callers
 * turn a status into their own messages.
 */
#ifndef PCAR_SECRET_FILE_H
#define PCAR_SECRET_FILE_H

#include <stddef.h>

#define PCAR_SECRET_BYTES		32	/* X25519 secret and public keys */
#define PCAR_SECRET_HEX_CHARS	(PCAR_SECRET_BYTES * 2)
/* Room for the hex secret, a newline and one byte to detect excess. */
#define PCAR_SECRET_READ_BYTES	(PCAR_SECRET_HEX_CHARS + 2)

typedef enum PcarSecretFileStatus
{
	PCAR_SECRET_FILE_OK,
	PCAR_SECRET_FILE_OPEN_FAILED,	/* errno says why */
	PCAR_SECRET_FILE_STAT_FAILED,	/* errno says why */
	PCAR_SECRET_FILE_NOT_REGULAR,
	PCAR_SECRET_FILE_GROUP_OR_OTHER,	/* any permission for group or others */
	PCAR_SECRET_FILE_READ_FAILED	/* errno says why */
} PcarSecretFileStatus;

/*
 * Opens path (already resolved by the caller), checks that it is a regular
 * file with no permission for group or others, and reads at most
 * PCAR_SECRET_READ_BYTES into buf, storing the count in *len.  On failure
 * errno is as the failing call left it.  *mode receives the file's
 * permission bits when the file could be examined (else 0); mode may be
 * NULL.
 */
extern PcarSecretFileStatus pcar_secret_file_read(const char *path, char *buf,
												  size_t *len, unsigned int *mode);

/*
 * Parses exactly PCAR_SECRET_HEX_CHARS hex characters (either case),
 * optionally followed by one newline, into secret.  Returns 1 if the text
 * has that form, else 0 (secret is then wiped).
 */
extern int	pcar_secret_parse(const char *text, size_t len, unsigned char *secret);

/* The X25519 public key of a secret (crypto_scalarmult_base). */
extern void pcar_secret_public_key(unsigned char *public_key,
								   const unsigned char *secret);

#endif							/* PCAR_SECRET_FILE_H */
