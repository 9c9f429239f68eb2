/*
 * pgcrypt_at_rest_pubkey.c
 *		Prints the public key of an existing server secret file.
 *
 *		pgcrypt_at_rest_pubkey FILE
 *
 * FILE is checked as the server checks pgcrypt_at_rest.server_key_file (a
 * regular file, outside the data directory, no permission for group or
 * others, 64 hex characters and at most one newline) with the server's own
 * code (secret_file.c), so that a file it accepts is one the server loads,
 * and the key it prints is the one server_public_key() returns.  What is
 * wrong is said, never any byte of the file.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli_common.h"
#include "secret_file.h"

typedef struct Secret
{
	char		text[PCAR_SECRET_READ_BYTES];
	unsigned char secret[PCAR_SECRET_BYTES];
} Secret;

static void
usage(void)
{
	printf("%s prints the public key of a pgcrypt_at_rest server secret file.\n\n", progname);
	printf("Usage:\n");
	printf("  %s [OPTION]... FILE\n\n", progname);
	printf("Options:\n");
	printf("  -V, --version  output version information, then exit\n");
	printf("  -?, --help     show this help, then exit\n\n");
	printf("FILE is checked as the server checks pgcrypt_at_rest.server_key_file.  The\n"
		   "public key is printed on standard output as \\x followed by 64 hexadecimal\n"
		   "digits, a bytea literal; the secret is never printed.\n");
}

int
main(int argc, char **argv)
{
	const char *file;
	char		real_file[PATH_MAX];
	char		directory[PATH_MAX];
	char		data_directory[PATH_MAX];
	Secret	   *s;
	size_t		len = 0;
	unsigned int mode = 0;
	unsigned char public_key[PCAR_SECRET_BYTES];

	file = cli_start(argc, argv, usage);

	if (realpath(file, real_file) == NULL)
	{
		cli_error("could not open server key file \"%s\": %m", file);
		exit(1);
	}
	cli_directory_of(real_file, directory);
	if (cli_find_data_directory(directory, data_directory))
	{
		cli_error("server key file \"%s\" is inside the PostgreSQL data directory \"%s\"",
				  file, data_directory);
		cli_hint("The server refuses it: move it out of the data directory.");
		exit(1);
	}

	s = cli_secret_alloc(sizeof(Secret));
	switch (pcar_secret_file_read(real_file, s->text, &len, &mode))
	{
		case PCAR_SECRET_FILE_OK:
			break;
		case PCAR_SECRET_FILE_OPEN_FAILED:
			cli_error("could not open server key file \"%s\": %m", file);
			exit(1);
		case PCAR_SECRET_FILE_STAT_FAILED:
			cli_error("could not stat server key file \"%s\": %m", file);
			exit(1);
		case PCAR_SECRET_FILE_NOT_REGULAR:
			cli_error("server key file \"%s\" is not a regular file", file);
			exit(1);
		case PCAR_SECRET_FILE_GROUP_OR_OTHER:
			cli_error("server key file \"%s\" is accessible by group or others (mode %04o)",
					  file, mode);
			cli_hint("The server refuses it: make it readable by its owner only (chmod 600).");
			exit(1);
		case PCAR_SECRET_FILE_READ_FAILED:
			cli_error("could not read server key file \"%s\": %m", file);
			exit(1);
	}
	if (!pcar_secret_parse(s->text, len, s->secret))
	{
		cli_error("server key file \"%s\" is not 64 hexadecimal characters", file);
		cli_hint("A server secret is 64 hexadecimal characters, optionally followed by one newline; pgcrypt_at_rest_keygen writes one.");
		exit(1);
	}
	pcar_secret_public_key(public_key, s->secret);

	if (cli_print_public_key(public_key) != 0)
	{
		cli_error("could not write the public key to standard output: %m");
		exit(1);
	}
	return 0;
}
