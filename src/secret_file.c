/*
 * secret_file.c
 *		The server secret file, for the server and the command-line programs.
 *
 * Linked into the extension and into pgcrypt_at_rest_keygen and
 * pgcrypt_at_rest_pubkey, so that a secret the programs accept is one the
 * server accepts, and the public key they print is the one the server
 * derives.  No PostgreSQL header: see secret_file.h.  Besides
 * sodium_provider.c, this is the one file of the extension that calls
 * libsodium's cryptography, for the public key alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "secret_file.h"

_Static_assert(PCAR_SECRET_BYTES == crypto_scalarmult_SCALARBYTES &&
			   PCAR_SECRET_BYTES == crypto_scalarmult_BYTES,
			   "X25519 key size");

/* Reads at most PCAR_SECRET_READ_BYTES; returns 0, or -1 with errno set. */
static int
read_fully(int fd, char *buf, size_t *len)
{
	size_t		total = 0;

	while (total < PCAR_SECRET_READ_BYTES)
	{
		ssize_t		n = read(fd, buf + total, PCAR_SECRET_READ_BYTES - total);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		total += n;
	}
	*len = total;
	return 0;
}

/* Closes fd without disturbing errno; returns status. */
static PcarSecretFileStatus
close_with(int fd, PcarSecretFileStatus status)
{
	int			save_errno = errno;

	close(fd);
	errno = save_errno;
	return status;
}

PcarSecretFileStatus
pcar_secret_file_read(const char *path, char *buf, size_t *len, unsigned int *mode)
{
	struct stat st;
	int			fd;

	if (mode != NULL)
		*mode = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return PCAR_SECRET_FILE_OPEN_FAILED;
	if (fstat(fd, &st) != 0)
		return close_with(fd, PCAR_SECRET_FILE_STAT_FAILED);
	if (mode != NULL)
		*mode = st.st_mode & 07777;
	if (!S_ISREG(st.st_mode))
		return close_with(fd, PCAR_SECRET_FILE_NOT_REGULAR);
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		return close_with(fd, PCAR_SECRET_FILE_GROUP_OR_OTHER);
	if (read_fully(fd, buf, len) != 0)
		return close_with(fd, PCAR_SECRET_FILE_READ_FAILED);
	close(fd);
	return PCAR_SECRET_FILE_OK;
}

int
pcar_secret_parse(const char *text, size_t len, unsigned char *secret)
{
	if (len == PCAR_SECRET_HEX_CHARS + 1 && text[PCAR_SECRET_HEX_CHARS] == '\n')
		len--;
	if (len != PCAR_SECRET_HEX_CHARS)
		return 0;
	for (size_t i = 0; i < len; i++)
	{
		char		c = text[i];
		int			nibble;

		if (c >= '0' && c <= '9')
			nibble = c - '0';
		else if (c >= 'a' && c <= 'f')
			nibble = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			nibble = c - 'A' + 10;
		else
		{
			sodium_memzero(secret, PCAR_SECRET_BYTES);
			return 0;
		}
		if (i % 2 == 0)
			secret[i / 2] = nibble << 4;
		else
			secret[i / 2] |= nibble;
	}
	return 1;
}

void
pcar_secret_public_key(unsigned char *public_key, const unsigned char *secret)
{
	crypto_scalarmult_base(public_key, secret);
}
