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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "miscadmin.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "pgcrypt_at_rest.h"
#include "secret_file.h"
#include "server_key.h"
#include "sodium_provider.h"

StaticAssertDecl(PCAR_SECRET_BYTES == PCAR_SERVER_KEY_BYTES, "server key size");

/* Room for the hex secret, a newline and one byte to detect excess. */
#define SECRET_READ_BYTES	PCAR_SECRET_READ_BYTES

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

static bool
path_is_inside(const char *path, const char *dir)
{
	size_t		dir_len = strlen(dir);

	return strncmp(path, dir, dir_len) == 0 &&
		(path[dir_len] == '/' || path[dir_len] == '\0');
}

static bool
read_secret_file(const char *path, char *buf, ssize_t *len)
{
	char		real_file[PATH_MAX];
	char		real_datadir[PATH_MAX];
	size_t		read_len = 0;

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

	switch (pcar_secret_file_read(real_file, buf, &read_len, NULL))
	{
		case PCAR_SECRET_FILE_OK:
			*len = read_len;
			return true;
		case PCAR_SECRET_FILE_OPEN_FAILED:
			set_problem("could not open server key file \"%s\": %m", path);
			break;
		case PCAR_SECRET_FILE_STAT_FAILED:
		case PCAR_SECRET_FILE_NOT_REGULAR:
			set_problem("server key file \"%s\" is not a regular file", path);
			break;
		case PCAR_SECRET_FILE_GROUP_OR_OTHER:
			set_problem("server key file \"%s\" is accessible by group or others", path);
			break;
		case PCAR_SECRET_FILE_READ_FAILED:
			set_problem("could not read server key file \"%s\": %m", path);
			break;
	}
	return false;
}

/*
 * The secret command runs as "sh -c" in a process group of its own, with
 * only three descriptors: /dev/null as stdin, a pipe as stdout, and the
 * postmaster's stderr.  The postmaster reads the pipe until sh has exited,
 * not until end of file: a background child (a KMS agent that daemonizes)
 * may hold the pipe open for as long as it lives.  A command still running
 * after pgcrypt_at_rest.server_key_command_timeout is killed with its whole
 * group, children included; the timeout is below pg_ctl's default wait, so
 * that a hung KMS is reported rather than making the start fail.
 */

/* How often sh is checked for having exited while the pipe is quiet. */
#define SECRET_COMMAND_POLL_MS	20

/*
 * Opens /dev/null on any of descriptors 0 to 2 that is closed, so that the
 * pipe never takes one of them (the child's dup2() calls would clobber it).
 */
static bool
fill_closed_stdio(void)
{
	for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++)
	{
		int			null_fd;

		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		/* the lowest free descriptor: fd */
		null_fd = open("/dev/null", O_RDWR);
		if (null_fd < 0)
			return false;
		Assert(null_fd == fd);
	}
	return true;
}

static void exec_secret_command(const char *command, int out_fd) pg_attribute_noreturn();

/* In the forked child: sets up the process and runs the command. */
static void
exec_secret_command(const char *command, int out_fd)
{
	sigset_t	none;
	int			null_fd;

	/* its own group, so that a timeout kills whatever it started too */
	(void) setpgid(0, 0);

	/* the postmaster blocks and ignores some signals while it starts */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);

	/* out_fd > 2 (fill_closed_stdio): dup2() clears FD_CLOEXEC on the copy */
	if (dup2(out_fd, STDOUT_FILENO) < 0)
		_exit(127);
	null_fd = open("/dev/null", O_RDONLY);
	if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0)
		_exit(127);

	/*
	 * Our own descriptors are close-on-exec; this also closes whatever the
	 * postmaster inherited from the process that started it.
	 */
#ifdef SYS_close_range
	if (syscall(SYS_close_range, STDERR_FILENO + 1, ~0U, 0) != 0)
#endif
	{
		long		max_fd = sysconf(_SC_OPEN_MAX);

		for (long fd = STDERR_FILENO + 1; fd < (max_fd > 0 ? max_fd : 1024); fd++)
			close((int) fd);
	}

	execl("/bin/sh", "sh", "-c", command, (char *) NULL);
	_exit(127);
}

/*
 * Reads what the pipe holds now.  The first SECRET_READ_BYTES bytes are kept
 * in buf; more is read and dropped while keep_reading, so that the command
 * never blocks on a full pipe.  Returns 1 at end of file, 0 when nothing
 * more is readable (or buf is full and !keep_reading), -1 on error.
 */
static int
read_available(int fd, char *buf, size_t *total, bool keep_reading)
{
	char		discard[256];

	for (;;)
	{
		ssize_t		n;

		if (*total < SECRET_READ_BYTES)
			n = read(fd, buf + *total, SECRET_READ_BYTES - *total);
		else if (keep_reading)
		{
			n = read(fd, discard, sizeof(discard));
			pcar_wipe(discard, sizeof(discard));
		}
		else
			return 0;

		if (n > 0)
		{
			*total = Min(*total + n, (size_t) SECRET_READ_BYTES);
			/* one excess read at a time: a fast writer must not hold us */
			if (*total == SECRET_READ_BYTES && keep_reading)
				return 0;
			continue;
		}
		if (n == 0)
			return 1;
		if (errno == EINTR)
			continue;
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
	}
}

/* Kills the command's whole group and reaps sh. */
static void
kill_secret_command(pid_t child)
{
	int			status;

	if (kill(-child, SIGKILL) != 0)
		(void) kill(child, SIGKILL);	/* the group does not exist yet */
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
}

static bool
read_secret_command(const char *command, char *buf, ssize_t *len)
{
	int			fds[2];
	pid_t		child;
	int			status = 0;
	size_t		total = 0;
	bool		at_eof = false;
	bool		reaped = false;
	bool		failed = false; /* the problem is set */
	TimestampTz deadline;

	if (!fill_closed_stdio())
	{
		set_problem("could not open /dev/null for pgcrypt_at_rest.server_key_command: %m");
		return false;
	}
	if (pipe2(fds, O_CLOEXEC) != 0)
	{
		set_problem("could not create a pipe for pgcrypt_at_rest.server_key_command: %m");
		return false;
	}
	/* the read end only: the write end is the command's stdout */
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0)
	{
		set_problem("could not create a pipe for pgcrypt_at_rest.server_key_command: %m");
		close(fds[0]);
		close(fds[1]);
		return false;
	}
	fflush(NULL);
	child = fork();
	if (child < 0)
	{
		set_problem("could not run pgcrypt_at_rest.server_key_command: %m");
		close(fds[0]);
		close(fds[1]);
		return false;
	}
	if (child == 0)
		exec_secret_command(command, fds[1]);
	close(fds[1]);
	/* here too, so that the group exists even before the child has run */
	(void) setpgid(child, child);

	deadline = GetCurrentTimestamp() +
		(TimestampTz) pcar_server_key_command_timeout * USECS_PER_SEC;
	for (;;)
	{
		struct pollfd pfd = {.fd = fds[0],.events = POLLIN};
		pid_t		waited = waitpid(child, &status, WNOHANG);
		long		remaining_ms;
		int			rc;

		if (waited < 0 && errno != EINTR)
		{
			set_problem("could not wait for pgcrypt_at_rest.server_key_command: %m");
			failed = true;
			break;
		}
		if (waited == child)
		{
			/*
			 * What sh and its foreground commands printed is in the pipe now;
			 * take it without waiting for an end of file that a background
			 * child may hold back.
			 */
			reaped = true;
			if (read_available(fds[0], buf, &total, false) < 0)
			{
				set_problem("could not read the output of pgcrypt_at_rest.server_key_command: %m");
				failed = true;
			}
			break;
		}

		remaining_ms = (deadline - GetCurrentTimestamp()) / 1000;
		if (remaining_ms <= 0)
		{
			set_problem("pgcrypt_at_rest.server_key_command timed out after %ds (pgcrypt_at_rest.server_key_command_timeout) and was killed with its process group",
						pcar_server_key_command_timeout);
			failed = true;
			break;
		}
		if (at_eof)
		{
			/* sh closed its stdout but runs on */
			pg_usleep(Min(remaining_ms, SECRET_COMMAND_POLL_MS) * 1000L);
			continue;
		}
		rc = poll(&pfd, 1, (int) Min(remaining_ms, SECRET_COMMAND_POLL_MS));
		if (rc > 0)
			rc = read_available(fds[0], buf, &total, true);
		else if (rc < 0 && errno == EINTR)
			rc = 0;
		if (rc < 0)
		{
			set_problem("could not read the output of pgcrypt_at_rest.server_key_command: %m");
			failed = true;
			break;
		}
		at_eof = (rc == 1);
	}
	close(fds[0]);
	if (!reaped)
		kill_secret_command(child);
	if (failed)
		return false;

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

	if (ok && !pcar_secret_parse(text, len, key->secret_key))
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
