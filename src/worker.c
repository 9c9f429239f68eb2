/*
 * worker.c
 *		The rotation worker of one database: every time it wakes it persists
 *		encryption counts and applies rotation policies (at most once a nap),
 *		moves destruction rounds along, and runs one drain batch.  Each of
 *		those is a short transaction of its own; an error in one is logged,
 *		noted where a DBA will see it (rotation_status), and the loop goes on.
 *		Between batches it sleeps rotation_delay; with nothing to do, a nap.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "drain.h"
#include "commands/dbcommands.h"
#include "guc.h"
#include "key_destruction.h"
#include "key_store.h"
#include "pgcrypt_at_rest.h"
#include "policy.h"
#include "shared_state.h"
#include "worker.h"

bool		pcar_in_rotation_worker = false;

typedef enum StepKind
{
	STEP_CHECK_INSTALLED,
	STEP_POLICIES,
	STEP_DESTRUCTION,
	STEP_DRAIN
} StepKind;

typedef struct StepState
{
	bool		installed;
	bool		rotated;		/* a policy rotated a keyring */
	PcarDrainResult drain;
	List	   *destroyed;		/* key ids, logged once committed */
} StepState;

/*
 * True when the extension, at the library's version, is in this database.
 * An older version waits for ALTER EXTENSION ... UPDATE (the worker leaves,
 * and the launcher asks again later).
 */
static bool
extension_ready(void)
{
	if (!OidIsValid(get_extension_oid("pgcrypt_at_rest", true)))
		return false;
	if (!pcar_store_schema_is_current())
	{
		ereport(LOG,
				(errmsg("pgcrypt_at_rest worker: the extension in database \"%s\" is older than its library, so nothing rotates there",
						get_database_name(MyDatabaseId)),
				 errhint("Run ALTER EXTENSION pgcrypt_at_rest UPDATE in that database.")));
		return false;
	}
	return true;
}

static void
run_step_body(StepKind kind, StepState *state, MemoryContext loop_context)
{
	switch (kind)
	{
		case STEP_CHECK_INSTALLED:
			state->installed = extension_ready();
			break;
		case STEP_POLICIES:
			pcar_persist_encryption_counts();
			state->rotated = pcar_apply_rotation_policies();
			break;
		case STEP_DESTRUCTION:
			{
				List	   *destroyed = pcar_destruction_step();
				MemoryContext old = MemoryContextSwitchTo(loop_context);

				state->destroyed = list_copy(destroyed);
				MemoryContextSwitchTo(old);
			}
			break;
		case STEP_DRAIN:
			pcar_drain_batch(&state->drain, pcar_destruction_round_keys(), false);
			/* the list must outlive the transaction */
			{
				MemoryContext old = MemoryContextSwitchTo(loop_context);

				state->drain.drained_keys = list_copy(state->drain.drained_keys);
				MemoryContextSwitchTo(old);
			}
			break;
	}
}

/* One step in its own transaction; false if it failed. */
static bool
run_step(StepKind kind, const char *activity, StepState *state, MemoryContext loop_context)
{
	volatile bool ok = true;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	PG_TRY();
	{
		run_step_body(kind, state, loop_context);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(loop_context);
		error = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("pgcrypt_at_rest worker: %s failed: %s", activity, error->message)));

		/* where the drain stopped, so rotation_status shows it */
		if (kind == STEP_DRAIN)
		{
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			pcar_drain_note_error(error->message);
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
		FreeErrorData(error);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(loop_context);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

void
pcar_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	MemoryContext loop_context;
	TimestampTz last_policy_check = 0;
	StepState	state;
	bool		pass_running = false;
	int64		pass_reencrypted = 0;
	int			idle_passes = 0;
	TimestampTz next_pass_at = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (!pcar_shared_claim_worker_slot(dboid))
		proc_exit(0);			/* another worker serves this database */

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pcar_in_rotation_worker = true;
	/* the worker runs user statements as table owners: nothing from the path */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "pgcrypt_at_rest worker", PGC_USERSET, PGC_S_SESSION);

	loop_context = AllocSetContextCreate(TopMemoryContext, "pgcrypt_at_rest worker",
										 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		long		sleep_ms = pcar_worker_naptime * 1000L;
		TimestampTz now;

		/* a cancel aimed at a step that already ended must not end the worker */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);

		memset(&state, 0, sizeof(state));
		if (!run_step(STEP_CHECK_INSTALLED, "checking the extension", &state, loop_context))
			proc_exit(1);
		if (!state.installed)
			proc_exit(0);		/* the launcher asks again a nap later */

		if (!pcar_worker_enabled)
		{
			pgstat_report_activity(STATE_IDLE, "paused: pgcrypt_at_rest.worker_enabled is off");
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			continue;
		}

		now = GetCurrentTimestamp();
		if (TimestampDifferenceExceeds(last_policy_check, now, pcar_worker_naptime * 1000))
		{
			if (run_step(STEP_POLICIES, "applying rotation policies", &state, loop_context) &&
				state.rotated)
				next_pass_at = 0;
			last_policy_check = now;
		}

		if (run_step(STEP_DESTRUCTION, "destroying drained keys", &state, loop_context))
		{
			ListCell   *cell;

			foreach(cell, state.destroyed)
				ereport(LOG,
						(errmsg("pgcrypt_at_rest destroyed key %d: no value needs it any more",
								lfirst_int(cell))));
		}
		/*
		 * A pass in progress goes on batch by batch.  A new pass waits a nap
		 * after the last one, longer (up to 16 naps) after passes that
		 * re-encrypted nothing, such as those finding only values it cannot
		 * rotate: each pass counts every table.  Being woken starts one now.
		 */
		if (pass_running || now >= next_pass_at)
		{
			if (run_step(STEP_DRAIN, "re-encrypting values under deprecated keys", &state, loop_context))
			{
				if (state.drain.drained_keys != NIL)
					pcar_destruction_schedule(state.drain.drained_keys);
				pass_reencrypted += state.drain.reencrypted;
				pass_running = state.drain.pass_running;
			}
			else
				pass_running = true;	/* the failing column was skipped */
			if (!pass_running)
			{
				idle_passes = pass_reencrypted > 0 ? 0 : Min(idle_passes + 1, 4);
				pass_reencrypted = 0;
				next_pass_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   (int64) pcar_worker_naptime * 1000 << idle_passes);
			}
		}
		if (pass_running)
			sleep_ms = pcar_rotation_delay;

		/* rounds wait for other transactions: look again each second */
		if (pcar_destruction_round_keys() != NIL)
			sleep_ms = Min(sleep_ms, 1000L);

		if (sleep_ms > 0)
		{
			int			events = WaitLatch(MyLatch,
										   WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
										   sleep_ms, PG_WAIT_EXTENSION);

			ResetLatch(MyLatch);
			if (events & WL_LATCH_SET)
				next_pass_at = 0;	/* rotate_keyring() or the like: work to do */
		}
	}
}
