/*
 * pgcrypt_at_rest.c
 *		Module entry point.  Each module initialises itself; this file only
 *		calls them in order.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "guc.h"
#include "launcher.h"
#include "pgcrypt_at_rest.h"
#include "server_key.h"
#include "shared_state.h"
#include "sodium_provider.h"

PG_MODULE_MAGIC;

bool		pcar_preloaded = false;

void		_PG_init(void);

void
_PG_init(void)
{
	pcar_sodium_init();

	/* without preloading, every function that needs keys says so */
	if (!process_shared_preload_libraries_in_progress)
		return;

	pcar_define_gucs();
	pcar_preloaded = true;
	pcar_server_key_load();
	pcar_shared_state_init();
	pcar_launcher_init();
}

void
pcar_require_preloaded(void)
{
	if (!pcar_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgcrypt_at_rest must be loaded via shared_preload_libraries"),
				 errhint("Add pgcrypt_at_rest to shared_preload_libraries in postgresql.conf and restart the server.")));
}
