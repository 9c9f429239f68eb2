/*
 * guc.c
 *		Configuration parameters of pgcrypt_at_rest, all defined here.
 *
 * The server secret is read once, by the postmaster, so the settings that
 * locate it only take effect at server start.
 */
#include "postgres.h"

#include "utils/guc.h"

#include "guc.h"

char	   *pcar_server_key_file = NULL;
char	   *pcar_server_key_command = NULL;

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

	MarkGUCPrefixReserved("pgcrypt_at_rest");
}
