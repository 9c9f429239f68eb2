/*
 * cli_common.h
 *		What pgcrypt_at_rest_keygen and pgcrypt_at_rest_pubkey share:
 *		options, messages in PostgreSQL's style, secret memory, the data
 *		directory check and printing a public key.
 *
 * Plain C and libsodium: the programs include no PostgreSQL header and link
 * no PostgreSQL library, so that they build and run anywhere the extension
 * does.
 */
#ifndef PCAR_CLI_COMMON_H
#define PCAR_CLI_COMMON_H

#include <stddef.h>

extern const char *progname;

/*
 * Sets progname, turns off core dumps, initialises libsodium and parses the
 * command line: --help (-?) calls usage() and exits 0, --version (-V)
 * prints the version and exits 0, and anything but exactly one FILE is an
 * error.  Returns FILE.
 */
extern const char *cli_start(int argc, char **argv, void (*usage) (void));

/* "progname: error: ..." and "progname: hint: ..." on stderr; %m works. */
extern void cli_error(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern void cli_hint(const char *fmt,...) __attribute__((format(printf, 1, 2)));
/* "progname: ..." on stderr. */
extern void cli_info(const char *fmt,...) __attribute__((format(printf, 1, 2)));

/*
 * Locked memory, excluded from core dumps, wiped and freed at exit (the
 * programs hold one such region at most).  Exits on failure.
 */
extern void *cli_secret_alloc(size_t len);

/*
 * If dir (an absolute path without symbolic links) or a directory above it
 * is a PostgreSQL data directory (PG_VERSION beside global/ or
 * postgresql.conf), stores its path in found (PATH_MAX bytes) and returns 1;
 * else returns 0.
 */
extern int	cli_find_data_directory(const char *dir, char *found);

/* The directory part of path, as dirname(1) gives it, into dir (PATH_MAX). */
extern void cli_directory_of(const char *path, char *dir);

/*
 * Prints "\x" and the key in lower-case hex on a line of its own on stdout,
 * the form a bytea literal takes.  Returns 0, or -1 (errno set) if stdout
 * could not be written.
 */
extern int	cli_print_public_key(const unsigned char *public_key);

#endif							/* PCAR_CLI_COMMON_H */
