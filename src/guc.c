/*
 * guc.c
 *		Configuration parameters of pgcrypt_at_rest, all defined here.
 *
 * The server secret is read once, by the postmaster, so the settings that
 * locate it only take effect at server start.
 */
#include "postgres.h"

#include <limits.h>
#include <stdlib.h>

#include "utils/guc.h"

#include "guc.h"

char	   *pcar_server_key_file = NULL;
char	   *pcar_server_key_command = NULL;
int			pcar_server_key_command_timeout = 30;
bool		pcar_worker_enabled = true;
int			pcar_worker_naptime = 60;
int			pcar_rotation_batch_size = 500;
int			pcar_rotation_delay = 100;
int			pcar_destroy_grace = 7 * 24 * 60 * 60;
int			pcar_max_workers = 3;
int			pcar_worker_statement_timeout = 60 * 1000;
int			pcar_worker_lock_timeout = 5 * 1000;

void
pcar_define_gucs(void)
{
	DefineCustomStringVariable("pgcrypt_at_rest.server_key_file",
							   "File holding this server's secret (64 hex characters).",
							   "Must be outside the data directory and readable by its owner only.",
							   &pcar_server_key_file,
							   "",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("pgcrypt_at_rest.server_key_command",
							   "Shell command printing this server's secret (64 hex characters).",
							   "Run once by the postmaster at start; use it to ask a KMS or vault.",
							   &pcar_server_key_command,
							   "",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	/* below pg_ctl's default wait of 60 s: a hung KMS is reported, not waited out */
	DefineCustomIntVariable("pgcrypt_at_rest.server_key_command_timeout",
							"How long the server secret command may run before it is killed.",
							"The server then starts without a secret.",
							&pcar_server_key_command_timeout,
							30, 1, INT_MAX / 1000,
							PGC_POSTMASTER,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("pgcrypt_at_rest.worker_enabled",
							 "Whether rotation workers drain, destroy and apply policies.",
							 "Off pauses them (they stay connected); drain() and destroy_drained_keys() still work.",
							 &pcar_worker_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("pgcrypt_at_rest.worker_naptime",
							"How often a rotation worker looks for work.",
							"rotate_keyring() and deprecate_key() wake it at once.",
							&pcar_worker_naptime,
							60, 1, INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pgcrypt_at_rest.rotation_batch_size",
							"Rows re-encrypted in one transaction.",
							NULL,
							&pcar_rotation_batch_size,
							500, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pgcrypt_at_rest.rotation_delay",
							"Pause between two re-encryption batches.",
							"Zero runs batches back to back.",
							&pcar_rotation_delay,
							100, 0, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pgcrypt_at_rest.destroy_grace",
							"How long a drained key is kept before its material is destroyed.",
							"Set it to the retention of your backups: restoring one needs its keys.",
							&pcar_destroy_grace,
							7 * 24 * 60 * 60, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pgcrypt_at_rest.max_workers",
							"How many rotation workers run at once, across all databases.",
							"Each serves one database at a time; databases with signalled work go first, and every database is visited in turn.",
							&pcar_max_workers,
							3, 1, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pgcrypt_at_rest.worker_statement_timeout",
							"How long a table's own code may run in one re-encryption batch.",
							"Its constraints, index expressions, generated columns and context expression; past it, the batch fails and the table is tried again later.",
							&pcar_worker_statement_timeout,
							60 * 1000, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pgcrypt_at_rest.worker_lock_timeout",
							"How long a rotation worker waits for a lock another session holds.",
							"Past it, the step fails and is tried again later; tables an application keeps locked are skipped without waiting.",
							&pcar_worker_lock_timeout,
							5 * 1000, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("pgcrypt_at_rest");
}

static bool
setting_is(const char *name, const char *value)
{
	const char *current = GetConfigOption(name, true, false);

	return current != NULL && strcmp(current, value) == 0;
}

static double
numeric_setting(const char *name)
{
	const char *current = GetConfigOption(name, true, false);

	return current != NULL ? strtod(current, NULL) : 0;
}

/*
 * Bind parameters reach the server log in full under PostgreSQL's defaults
 * as soon as statements are logged, and they carry the plaintext passed to
 * encrypt().  Warns when that is the case, each time it becomes so.
 */
void
pcar_warn_if_parameters_logged(void)
{
	static bool warned = false;
	bool		statements_logged = !setting_is("log_statement", "none") ||
		numeric_setting("log_min_duration_statement") >= 0 ||
		(numeric_setting("log_min_duration_sample") >= 0 &&
		 numeric_setting("log_statement_sample_rate") > 0) ||
		numeric_setting("log_transaction_sample_rate") > 0;
	bool		with_statements = statements_logged &&
		numeric_setting("log_parameter_max_length") != 0;
	bool		with_errors = numeric_setting("log_parameter_max_length_on_error") != 0;

	if (!with_statements && !with_errors)
	{
		warned = false;
		return;
	}
	if (warned)
		return;
	warned = true;
	ereport(WARNING,
			(errmsg("pgcrypt_at_rest: the server log records bind parameters, which can hold the plaintext given to encrypt()"),
			 with_statements ?
			 errdetail("Statements are logged (log_statement, log_min_duration_statement or sampling), and log_parameter_max_length is not 0.") :
			 errdetail("log_parameter_max_length_on_error is not 0, so a failing statement logs its parameters."),
			 errhint("Set log_parameter_max_length = 0 and log_parameter_max_length_on_error = 0.")));
}
