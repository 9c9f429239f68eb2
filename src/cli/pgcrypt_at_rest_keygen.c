/*
 * pgcrypt_at_rest_keygen.c
 *		Writes a new server secret to a file and prints its public key.
 *
 *		pgcrypt_at_rest_keygen FILE
 *
 * The secret is 32 random bytes from libsodium, written as 64 lower-case
 * hex characters and a newline: the form the server reads from
 * pgcrypt_at_rest.server_key_file.  FILE is created with O_EXCL, so an
 * existing secret is never overwritten, with mode 0600 whatever the umask,
 * and both it and its directory are fsync'd before the public key is
 * printed.  Whatever fails once FILE exists, FILE is removed: a secret
 * whose public key nobody saw is better gone.  The secret is written with
 * write(2) from locked memory and never printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cli_common.h"
#include "secret_file.h"

typedef struct Secret
{
	unsigned char secret[PCAR_SECRET_BYTES];
	/* the hex characters, a newline, and room for sodium_bin2hex's NUL */
	char		text[PCAR_SECRET_HEX_CHARS + 2];
} Secret;

static const char *file;

static void
usage(void)
{
	printf("%s writes a new pgcrypt_at_rest server secret and prints its public key.\n\n", progname);
	printf("Usage:\n");
	printf("  %s [OPTION]... FILE\n\n", progname);
	printf("Options:\n");
	printf("  -V, --version  output version information, then exit\n");
	printf("  -?, --help     show this help, then exit\n\n");
	printf("FILE must not exist yet, nor be inside a PostgreSQL data directory; it is\n"
		   "created with mode 0600.  Its directory must not be writable by group or\n"
		   "others.  The public key is printed on standard output as \\x followed by 64\n"
		   "hexadecimal digits, a bytea literal; the secret is never printed.\n");
}

/* Removes FILE after a failure, saying so if that fails too; exits 1. */
static void
remove_and_exit(const char *directory)
{
	int			dir_fd;

	if (unlink(file) != 0)
	{
		cli_error("could not remove \"%s\": %m", file);
		cli_hint("Remove it yourself: it holds a secret nobody has the public key of.");
		exit(1);
	}
	/* best effort: the removal reaches the disk */
	dir_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd >= 0)
	{
		(void) fsync(dir_fd);
		close(dir_fd);
	}
	exit(1);
}

static int
write_fully(int fd, const char *buf, size_t len)
{
	while (len > 0)
	{
		ssize_t		n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
		{
			errno = ENOSPC;
			return -1;
		}
		buf += n;
		len -= n;
	}
	return 0;
}

static int
fsync_directory(const char *directory)
{
	int			fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int			save_errno;

	if (fd < 0)
		return -1;
	if (fsync(fd) != 0)
	{
		save_errno = errno;
		close(fd);
		errno = save_errno;
		return -1;
	}
	return close(fd);
}

int
main(int argc, char **argv)
{
	char		directory[PATH_MAX];
	char		real_directory[PATH_MAX];
	char		data_directory[PATH_MAX];
	char		absolute[PATH_MAX];
	const char *base;
	struct stat st;
	sigset_t	stop_signals;
	Secret	   *s;
	unsigned char public_key[PCAR_SECRET_BYTES];
	int			fd;

	file = cli_start(argc, argv, usage);

	/* where FILE will be: existing, outside any data directory, safe */
	cli_directory_of(file, directory);
	if (realpath(directory, real_directory) == NULL)
	{
		cli_error("could not access directory \"%s\": %m", directory);
		exit(1);
	}
	if (stat(real_directory, &st) != 0)
	{
		cli_error("could not access directory \"%s\": %m", directory);
		exit(1);
	}
	if (!S_ISDIR(st.st_mode))
	{
		cli_error("\"%s\" is not a directory", directory);
		exit(1);
	}
	if (cli_find_data_directory(real_directory, data_directory))
	{
		cli_error("\"%s\" is inside the PostgreSQL data directory \"%s\"",
				  file, data_directory);
		cli_hint("The server refuses a secret file inside its data directory, so that copies of the data directory (base backups, replicas) never carry the secret.  Choose a directory outside it.");
		exit(1);
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0)
	{
		cli_error("directory \"%s\" is writable by group or others", directory);
		cli_hint("Whoever can write to it can replace the secret file with one of their own.  Choose a directory only its owner can write to.");
		exit(1);
	}
	base = strrchr(file, '/');
	base = base != NULL ? base + 1 : file;
	if (snprintf(absolute, sizeof(absolute), "%s/%s",
				 strcmp(real_directory, "/") == 0 ? "" : real_directory,
				 base) >= (int) sizeof(absolute))
	{
		cli_error("file name \"%s\" is too long", file);
		exit(1);
	}

	s = cli_secret_alloc(sizeof(Secret));
	randombytes_buf(s->secret, sizeof(s->secret));
	sodium_bin2hex(s->text, sizeof(s->text), s->secret, sizeof(s->secret));
	s->text[PCAR_SECRET_HEX_CHARS] = '\n';
	pcar_secret_public_key(public_key, s->secret);

	/*
	 * From here until the public key is printed, FILE is either complete or
	 * removed: signals wait (all that can), and a closed stdout or a file
	 * size limit is an error to handle rather than a signal that kills.
	 */
	sigfillset(&stop_signals);
	sigprocmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);

	fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			  S_IRUSR | S_IWUSR);
	if (fd < 0)
	{
		if (errno == EEXIST)
		{
			cli_error("file \"%s\" already exists", file);
			cli_hint("%s never overwrites a file: a secret overwritten is every key sealed only to it lost.  Choose another name.", progname);
		}
		else
			cli_error("could not create file \"%s\": %m", file);
		exit(1);
	}
	/* 0600 whatever the umask */
	if (fchmod(fd, S_IRUSR | S_IWUSR) != 0)
	{
		cli_error("could not set the mode of \"%s\": %m", file);
		close(fd);
		remove_and_exit(real_directory);
	}
	if (write_fully(fd, s->text, PCAR_SECRET_HEX_CHARS + 1) != 0)
	{
		cli_error("could not write \"%s\": %m", file);
		close(fd);
		remove_and_exit(real_directory);
	}
	sodium_memzero(s, sizeof(Secret));
	if (fsync(fd) != 0)
	{
		cli_error("could not fsync \"%s\": %m", file);
		close(fd);
		remove_and_exit(real_directory);
	}
	if (close(fd) != 0)
	{
		cli_error("could not close \"%s\": %m", file);
		remove_and_exit(real_directory);
	}
	if (fsync_directory(real_directory) != 0)
	{
		cli_error("could not fsync directory \"%s\": %m", directory);
		remove_and_exit(real_directory);
	}

	if (cli_print_public_key(public_key) != 0)
	{
		cli_error("could not write the public key to standard output: %m");
		remove_and_exit(real_directory);
	}
	sigprocmask(SIG_UNBLOCK, &stop_signals, NULL);

	cli_info("wrote a new server secret to \"%s\"; keep a copy of it somewhere safe", absolute);
	if (geteuid() == 0)
		cli_hint("The file belongs to root: give it to the operating system user that runs PostgreSQL (chown postgres \"%s\").", absolute);
	cli_hint("Set pgcrypt_at_rest.server_key_file = '%s' and restart; the public key printed on standard output is what SELECT pgcrypt_at_rest.server_public_key() will return there, and what pgcrypt_at_rest.add_server() takes.", absolute);
	return 0;
}
