/*
 * server_key.c
 *		Loading this server's secret from a file or a command.
 *
 * The postmaster reads the secret once, at start, into locked memory that
 * every backend inherits; a KMS command therefore runs once per start, not
 * once per connection.  Any problem is logged and remembered: the server
 * still starts, and functions that need keys report the problem with a
 * hint.  Messages name files and settings, never any byte of the secret.
 */
#include "postgres.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "miscadmin.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "pgcrypt_at_rest.h"
#include "server_key.h"
#include "sodium_provider.h"

#define SECRET_HEX_CHARS	(PCAR_SERVER_KEY_BYTES * 2)

/* Room for the hex secret, a newline and one byte to detect excess. */
#define SECRET_READ_BYTES	(SECRET_HEX_CHARS + 2)

typedef struct ServerKey
{
	uint8		secret_key[PCAR_SERVER_KEY_BYTES];
	uint8		public_key[PCAR_SERVER_KEY_BYTES];
} ServerKey;

static ServerKey *server_key = NULL;

/* Why no secret is loaded; inherited by backends from the postmaster. */
static char load_problem[512] = "the library was not loaded through shared_preload_libraries";

static void
set_problem(const char *fmt,...) pg_attribute_printf(1, 2);

static void
set_problem(const char *fmt,...)
{
	va_list		args;

	va_start(args, fmt);
	vsnprintf(load_problem, sizeof(load_problem), fmt, args);
	va_end(args);
}

/* Parses exactly 64 hex characters, optionally followed by one newline. */
static bool
parse_secret(const char *text, size_t len, uint8 *secret)
{
	if (len == SECRET_HEX_CHARS + 1 && text[SECRET_HEX_CHARS] == '\n')
		len--;
	if (len != SECRET_HEX_CHARS)
		return false;
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
			return false;
		if (i % 2 == 0)
			secret[i / 2] = nibble << 4;
		else
			secret[i / 2] |= nibble;
	}
	return true;
}

static bool
path_is_inside(const char *path, const char *dir)
{
	size_t		dir_len = strlen(dir);

	return strncmp(path, dir, dir_len) == 0 &&
		(path[dir_len] == '/' || path[dir_len] == '\0');
}

/* Reads at most SECRET_READ_BYTES; returns the count or -1 on error. */
static ssize_t
read_fully(int fd, char *buf)
{
	size_t		total = 0;

	while (total < SECRET_READ_BYTES)
	{
		ssize_t		n = read(fd, buf + total, SECRET_READ_BYTES - total);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		total += n;
	}
	return total;
}

static bool
read_secret_file(const char *path, char *buf, ssize_t *len)
{
	char		real_file[PATH_MAX];
	char		real_datadir[PATH_MAX];
	struct stat st;
	int			fd;

	if (!is_absolute_path(path))
	{
		set_problem("pgcrypt_at_rest.server_key_file \"%s\" is not an absolute path", path);
		return false;
	}
	if (realpath(path, real_file) == NULL)
	{
		set_problem("could not open server key file \"%s\": %m", path);
		return false;
	}
	if (DataDir != NULL && realpath(DataDir, real_datadir) != NULL &&
		path_is_inside(real_file, real_datadir))
	{
		set_problem("server key file \"%s\" is inside the data directory", path);
		return false;
	}

	fd = open(real_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
	{
		set_problem("could not open server key file \"%s\": %m", path);
		return false;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
	{
		close(fd);
		set_problem("server key file \"%s\" is not a regular file", path);
		return false;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		close(fd);
		set_problem("server key file \"%s\" is accessible by group or others", path);
		return false;
	}

	*len = read_fully(fd, buf);
	if (*len < 0)
	{
		set_problem("could not read server key file \"%s\": %m", path);
		close(fd);
		return false;
	}
	close(fd);
	return true;
}

/*
 * Runs the command with "sh -c", its output on a pipe.  The child gets the
 * default signal dispositions and an empty mask (the postmaster blocks and
 * ignores some while it starts), and is killed if it has not finished after
 * SECRET_COMMAND_TIMEOUT_MS: a hung KMS must not hang the server's start.
 */
#define SECRET_COMMAND_TIMEOUT_MS	60000

static bool
read_secret_command(const char *command, char *buf, ssize_t *len)
{
	int			fds[2];
	pid_t		child;
	int			status;
	size_t		total = 0;
	bool		timed_out = false;
	TimestampTz deadline;

	if (pipe(fds) != 0)
	{
		set_problem("could not create a pipe for pgcrypt_at_rest.server_key_command: %m");
		return false;
	}
	fflush(NULL);
	child = fork();
	if (child < 0)
	{
		int			save_errno = errno;

		close(fds[0]);
		close(fds[1]);
		errno = save_errno;
		set_problem("could not run pgcrypt_at_rest.server_key_command: %m");
		return false;
	}
	if (child == 0)
	{
		sigset_t	none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (int sig = 1; sig < NSIG; sig++)
			signal(sig, SIG_DFL);
		close(fds[0]);
		if (dup2(fds[1], STDOUT_FILENO) < 0)
			_exit(127);
		execl("/bin/sh", "sh", "-c", command, (char *) NULL);
		_exit(127);
	}
	close(fds[1]);

	deadline = GetCurrentTimestamp() + (TimestampTz) SECRET_COMMAND_TIMEOUT_MS * 1000;
	for (;;)
	{
		struct pollfd pfd = {.fd = fds[0],.events = POLLIN};
		long		remaining_ms = (deadline - GetCurrentTimestamp()) / 1000;
		char		discard[256];
		ssize_t		n;
		int			rc;

		if (remaining_ms <= 0)
		{
			timed_out = true;
			break;
		}
		rc = poll(&pfd, 1, (int) Min(remaining_ms, INT_MAX));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			continue;
		/* keep the first bytes; read and drop the rest so the child never blocks */
		if (total < SECRET_READ_BYTES)
			n = read(fds[0], buf + total, SECRET_READ_BYTES - total);
		else
		{
			n = read(fds[0], discard, sizeof(discard));
			pcar_wipe(discard, sizeof(discard));
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		total = Min(total + n, (size_t) SECRET_READ_BYTES);
	}
	close(fds[0]);
	if (timed_out)
		kill(child, SIGKILL);
	while (waitpid(child, &status, 0) < 0)
	{
		if (errno != EINTR)
		{
			set_problem("could not wait for pgcrypt_at_rest.server_key_command: %m");
			return false;
		}
	}

	if (timed_out)
	{
		set_problem("pgcrypt_at_rest.server_key_command did not finish within %d seconds",
					SECRET_COMMAND_TIMEOUT_MS / 1000);
		return false;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
	{
		set_problem("pgcrypt_at_rest.server_key_command failed: %s",
					wait_result_to_str(status));
		return false;
	}
	*len = total;
	return true;
}

void
pcar_server_key_load(void)
{
	bool		have_file = pcar_server_key_file && pcar_server_key_file[0];
	bool		have_command = pcar_server_key_command && pcar_server_key_command[0];
	char	   *text;
	ssize_t		len = 0;
	bool		ok;
	ServerKey  *key;

	if (have_file && have_command)
		set_problem("both pgcrypt_at_rest.server_key_file and pgcrypt_at_rest.server_key_command are set");
	else if (!have_file && !have_command)
		set_problem("neither pgcrypt_at_rest.server_key_file nor pgcrypt_at_rest.server_key_command is set");
	if (have_file == have_command)
	{
		ereport(WARNING,
				(errmsg("pgcrypt_at_rest: no server secret loaded: %s", load_problem),
				 errhint("Set exactly one of pgcrypt_at_rest.server_key_file or pgcrypt_at_rest.server_key_command and restart the server.")));
		return;
	}

	text = pcar_secure_alloc(SECRET_READ_BYTES);
	key = pcar_secure_alloc(sizeof(ServerKey));

	if (have_file)
		ok = read_secret_file(pcar_server_key_file, text, &len);
	else
		ok = read_secret_command(pcar_server_key_command, text, &len);

	if (ok && !parse_secret(text, len, key->secret_key))
	{
		set_problem("the server secret from %s is not 64 hexadecimal characters",
					have_file ? "pgcrypt_at_rest.server_key_file" :
					"pgcrypt_at_rest.server_key_command");
		ok = false;
	}
	pcar_secure_free(text);

	if (!ok)
	{
		pcar_secure_free(key);
		ereport(WARNING,
				(errmsg("pgcrypt_at_rest: no server secret loaded: %s", load_problem),
				 errhint("Fix the server secret and restart the server; encryption is unavailable until then.")));
		return;
	}

	pcar_public_key_from_secret(key->public_key, key->secret_key);
	server_key = key;
	ereport(LOG,
			(errmsg("pgcrypt_at_rest: server secret loaded from %s",
					have_file ? "pgcrypt_at_rest.server_key_file" :
					"pgcrypt_at_rest.server_key_command")));
}

bool
pcar_server_key_loaded(void)
{
	return server_key != NULL;
}

void
pcar_server_key_require(void)
{
	pcar_require_preloaded();
	if (server_key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("pgcrypt_at_rest has no server secret"),
				 superuser() ? errdetail_internal("%s.", load_problem) :
				 errdetail("The server log says why."),
				 errhint("Set pgcrypt_at_rest.server_key_file (a file of 64 hex characters, mode 0600, outside the data directory) or pgcrypt_at_rest.server_key_command, then restart the server.")));
}

const uint8 *
pcar_server_public_key(void)
{
	Assert(server_key != NULL);
	return server_key->public_key;
}

const uint8 *
pcar_server_secret_key(void)
{
	Assert(server_key != NULL);
	return server_key->secret_key;
}
