/*
 * cli_common.c
 *		Shared by pgcrypt_at_rest_keygen and pgcrypt_at_rest_pubkey.
 *
 * The programs handle a server secret, so they refuse to leave it where a
 * crash could: no core dumps (and the process is not dumpable, so no other
 * process of the same user can attach to it), the secret only ever in
 * sodium_malloc() memory (locked, excluded from core dumps, wiped when
 * freed), and never passed through stdio.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <sodium.h>

#include "cli_common.h"
#include "secret_file.h"

#ifndef PCAR_VERSION
#error "PCAR_VERSION must be defined (the Makefile takes it from pgcrypt_at_rest.control)"
#endif

const char *progname = "pgcrypt_at_rest";

static void *secret_memory = NULL;

static void
free_secret_memory(void)
{
	/* sodium_free wipes the region before unmapping it */
	if (secret_memory != NULL)
		sodium_free(secret_memory);
	secret_memory = NULL;
}

static void vmessage(const char *level, const char *fmt, va_list args)
			__attribute__((format(printf, 2, 0)));

static void
vmessage(const char *level, const char *fmt, va_list args)
{
	int			save_errno = errno;

	fflush(stdout);
	fprintf(stderr, "%s: %s", progname, level);
	errno = save_errno;			/* for %m */
	vfprintf(stderr, fmt, args);
	fputc('\n', stderr);
	errno = save_errno;
}

void
cli_error(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vmessage("error: ", fmt, args);
	va_end(args);
}

void
cli_hint(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vmessage("hint: ", fmt, args);
	va_end(args);
}

void
cli_info(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vmessage("", fmt, args);
	va_end(args);
}

static void
try_help(void)
{
	cli_hint("Try \"%s --help\" for more information.", progname);
	exit(1);
}

const char *
cli_start(int argc, char **argv, void (*usage) (void))
{
	struct rlimit no_core = {0, 0};
	const char *file = NULL;
	int			options_end = 0;

	if (argc > 0 && argv[0] != NULL && argv[0][0] != '\0')
	{
		const char *slash = strrchr(argv[0], '/');

		progname = slash != NULL ? slash + 1 : argv[0];
	}

	for (int i = 1; i < argc; i++)
	{
		const char *arg = argv[i];

		if (!options_end && arg[0] == '-' && arg[1] != '\0')
		{
			if (strcmp(arg, "--") == 0)
				options_end = 1;
			else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-?") == 0)
			{
				usage();
				exit(0);
			}
			else if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0)
			{
				printf("%s (pgcrypt_at_rest) %s\n", progname, PCAR_VERSION);
				exit(0);
			}
			else
			{
				cli_error("unrecognized option \"%s\"", arg);
				try_help();
			}
		}
		else if (file != NULL)
		{
			cli_error("too many command-line arguments (first is \"%s\")", arg);
			try_help();
		}
		else
			file = arg;
	}
	if (file == NULL)
	{
		cli_error("no secret file specified");
		try_help();
	}
	if (file[0] == '\0')
	{
		cli_error("the secret file name is empty");
		try_help();
	}
	if (strlen(file) >= PATH_MAX)
	{
		cli_error("the secret file name is too long");
		exit(1);
	}

	/* a core dump of this process could hold the secret */
	if (setrlimit(RLIMIT_CORE, &no_core) != 0)
	{
		cli_error("could not turn off core dumps: %m");
		exit(1);
	}
#ifdef __linux__
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
	{
		cli_error("could not make this process non-dumpable: %m");
		exit(1);
	}
#endif

	if (sodium_init() < 0)
	{
		cli_error("could not initialize libsodium");
		exit(1);
	}
	if (atexit(free_secret_memory) != 0)
	{
		cli_error("could not register the exit handler");
		exit(1);
	}
	return file;
}

void *
cli_secret_alloc(size_t len)
{
	if (secret_memory != NULL)
	{
		cli_error("internal error: secret memory allocated twice");
		exit(1);
	}
	secret_memory = sodium_malloc(len);
	if (secret_memory == NULL)
	{
		cli_error("could not allocate locked memory for the secret: %m");
		exit(1);
	}
	/* sodium_malloc ignores a failure to lock; try again, as best we can */
	(void) sodium_mlock(secret_memory, len);
	return secret_memory;
}

/* PG_VERSION beside global/ or postgresql.conf: what initdb leaves. */
static int
is_data_directory(const char *dir)
{
	char		path[PATH_MAX];
	struct stat st;

	if (snprintf(path, sizeof(path), "%s/PG_VERSION", dir) >= (int) sizeof(path) ||
		stat(path, &st) != 0 || !S_ISREG(st.st_mode))
		return 0;
	if (snprintf(path, sizeof(path), "%s/global", dir) < (int) sizeof(path) &&
		stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return 1;
	if (snprintf(path, sizeof(path), "%s/postgresql.conf", dir) < (int) sizeof(path) &&
		stat(path, &st) == 0 && S_ISREG(st.st_mode))
		return 1;
	return 0;
}

int
cli_find_data_directory(const char *dir, char *found)
{
	char		path[PATH_MAX];

	if (strlen(dir) >= sizeof(path))
		return 0;
	strcpy(path, dir);
	for (;;)
	{
		char	   *slash;

		if (is_data_directory(path))
		{
			strcpy(found, path);
			return 1;
		}
		slash = strrchr(path, '/');
		if (slash == NULL || strcmp(path, "/") == 0)
			return 0;
		if (slash == path)
			path[1] = '\0';
		else
			*slash = '\0';
	}
}

void
cli_directory_of(const char *path, char *dir)
{
	char		copy[PATH_MAX];

	snprintf(copy, sizeof(copy), "%s", path);
	snprintf(dir, PATH_MAX, "%s", dirname(copy));
}

int
cli_print_public_key(const unsigned char *public_key)
{
	char		hex[PCAR_SECRET_HEX_CHARS + 1];

	sodium_bin2hex(hex, sizeof(hex), public_key, PCAR_SECRET_BYTES);
	printf("\\x%s\n", hex);
	if (fflush(stdout) != 0 || ferror(stdout))
		return -1;
	return 0;
}
