/*
 * worker.c
 *		A rotation worker, serving one database for a visit (launcher.c runs
 *		the pool: a worker leaves when other databases wait, at once if
 *		nothing is under way here, else after a nap).  Its loop is a list of steps,
 *		each due on its own terms: apply rotation policies (once a nap),
 *		move destruction rounds along, run one drain batch.  Each step is a
 *		short transaction of its own; an error in one is logged with its
 *		detail and hint, handled by the step (the drain notes it where a DBA
 *		will see it, rotation_status), and the loop goes on.  Between
 *		batches it sleeps rotation_delay; with nothing to do, a nap.
 *
 * Everything the worker carries from one turn to the next is in its
 * WorkerState, in memory that outlives the steps' transactions.  A new
 * kind of work (re-sealing keys for a new server, say) is one more row in
 * the step table.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "drain.h"
#include "guc.h"
#include "key_destruction.h"
#include "key_store.h"
#include "policy.h"
#include "servers.h"
#include "shared_state.h"
#include "worker.h"

typedef struct WorkerState
{
	MemoryContext loop_context;	/* reset at every turn; steps' results live here */
	bool		installed;		/* the extension, at the library's version, is here */
	TimestampTz visit_started_at;

	/* policies */
	TimestampTz last_policy_check;
	bool		rotated;		/* a policy rotated a keyring this turn */
	TimestampTz hourly_reports_at;

	/* the drain: passes, and the batch of this turn */
	struct
	{
		bool		running;	/* a pass is under way: go on batch by batch */
		int64		reencrypted;	/* values re-encrypted in this pass */
		int			idle_passes;	/* passes in a row that re-encrypted nothing */
		TimestampTz next_at;	/* when a new pass is due */
	}			pass;
	PcarDrainState drain;
	PcarDrainResult batch;

	/* destruction */
	PcarDestructionRounds rounds;
	List	   *destroyed;		/* key ids destroyed this turn */
} WorkerState;

typedef struct WorkerStep
{
	const char *activity;
	bool		(*due) (WorkerState *state, TimestampTz now);
	/* in a transaction of its own; results go to state->loop_context */
	void		(*run) (WorkerState *state);
	/* after it committed (ok) or aborted, outside any transaction */
	void		(*done) (WorkerState *state, bool ok);
	/* after an abort, in a transaction of its own; may be NULL */
	void		(*on_error) (WorkerState *state, const ErrorData *error);
} WorkerStep;

/* Policies: at most once a nap, and at start. */

static bool
policies_due(WorkerState *state, TimestampTz now)
{
	if (!TimestampDifferenceExceeds(state->last_policy_check, now, pcar_worker_naptime * 1000))
		return false;
	state->last_policy_check = now;
	return true;
}

static void
run_policies(WorkerState *state)
{
	TimestampTz now = GetCurrentTimestamp();

	pcar_persist_encryption_counts();
	state->rotated = pcar_apply_rotation_policies();
	/* a policy that waits for ever, or a key this server lacks, would otherwise say nothing */
	if (TimestampDifferenceExceeds(state->hourly_reports_at, now, 3600 * 1000))
	{
		pcar_log_waiting_policies();
		pcar_log_missing_copies();
		state->hourly_reports_at = now;
	}
}

static void
policies_done(WorkerState *state, bool ok)
{
	/* a policy rotated a keyring: a pass is due now */
	if (ok && state->rotated)
		state->pass.next_at = 0;
}

/* Destruction: every turn, as rounds wait for other transactions. */

static bool
always_due(WorkerState *state, TimestampTz now)
{
	return true;
}

static void
run_destruction(WorkerState *state)
{
	List	   *destroyed = pcar_destruction_step(&state->rounds);
	MemoryContext old = MemoryContextSwitchTo(state->loop_context);

	state->destroyed = list_copy(destroyed);
	MemoryContextSwitchTo(old);
}

static void
destruction_done(WorkerState *state, bool ok)
{
	ListCell   *cell;

	/* logged once committed */
	foreach(cell, ok ? state->destroyed : NIL)
		ereport(LOG,
				(errmsg("pgcrypt_at_rest destroyed key %d: no value needs it any more",
						lfirst_int(cell))));
}

/*
 * The drain: a pass in progress goes on batch by batch.  A new pass waits a
 * nap after the last one, longer (up to 16 naps) after passes that
 * re-encrypted nothing, such as those finding only values it cannot
 * rotate: each pass counts every table.  Being woken starts one now.
 */

static bool
drain_due(WorkerState *state, TimestampTz now)
{
	return state->pass.running || now >= state->pass.next_at;
}

static void
run_drain(WorkerState *state)
{
	List	   *in_rounds = pcar_destruction_round_keys(&state->rounds);
	MemoryContext old;

	pcar_drain_batch(&state->drain, &state->batch, in_rounds);
	old = MemoryContextSwitchTo(state->loop_context);
	state->batch.drained_keys = list_copy(state->batch.drained_keys);
	MemoryContextSwitchTo(old);
}

static void
drain_done(WorkerState *state, bool ok)
{
	if (ok)
	{
		if (state->batch.drained_keys != NIL)
			pcar_destruction_schedule(&state->rounds, state->batch.drained_keys);
		state->pass.reencrypted += state->batch.reencrypted;
		state->pass.running = state->batch.pass_running;
	}
	else
		state->pass.running = true; /* the failing column was skipped */

	if (!state->pass.running && ok && state->batch.lower_priorities_left)
		state->pass.next_at = 0;	/* the next drain priority's pass, now */
	else if (!state->pass.running)
	{
		state->pass.idle_passes = state->pass.reencrypted > 0 ? 0 : Min(state->pass.idle_passes + 1, 4);
		state->pass.reencrypted = 0;
		state->pass.next_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  (int64) pcar_worker_naptime * 1000 << state->pass.idle_passes);
	}
}

static void
drain_error(WorkerState *state, const ErrorData *error)
{
	/* where the drain stopped, so rotation_status shows it */
	pcar_drain_note_error(&state->drain, error->message);
}

static const WorkerStep steps[] = {
	{"applying rotation policies", policies_due, run_policies, policies_done, NULL},
	{"destroying drained keys", always_due, run_destruction, destruction_done, NULL},
	{"re-encrypting values under deprecated keys", drain_due, run_drain, drain_done, drain_error},
};

/* Runs a function in a transaction of its own; the error it raised, or NULL. */
static ErrorData *
in_transaction(void (*function) (WorkerState *state), WorkerState *state, const char *activity)
{
	ErrorData  *volatile error = NULL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	PG_TRY();
	{
		function(state);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(state->loop_context);
		error = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(state->loop_context);
	/* a table owner's code may have taken session advisory locks: not kept */
	LockReleaseSession(USER_LOCKMETHOD);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return error;
}

static void
run_step(const WorkerStep *step, WorkerState *state)
{
	ErrorData  *error = in_transaction(step->run, state, step->activity);

	if (error != NULL)
	{
		ereport(LOG,
				(errmsg("pgcrypt_at_rest worker: %s failed: %s", step->activity, error->message),
				 error->detail ? errdetail_internal("%s", error->detail) : 0,
				 error->hint ? errhint("%s", error->hint) : 0));
		if (step->on_error != NULL)
		{
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			step->on_error(state, error);
			PopActiveSnapshot();
			CommitTransactionCommand();
			MemoryContextSwitchTo(state->loop_context);
		}
		FreeErrorData(error);
	}
	step->done(state, error == NULL);
}

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
check_installed(WorkerState *state)
{
	state->installed = extension_ready();
}

/* How long to sleep after a turn: a nap, or less while work is under way. */
static long
sleep_ms(WorkerState *state)
{
	long		ms = pcar_worker_naptime * 1000L;

	if (state->pass.running)
		ms = pcar_rotation_delay;
	/* rounds wait for other transactions: look again each second */
	if (pcar_destruction_round_keys(&state->rounds) != NIL)
		ms = Min(ms, 1000L);
	return ms;
}

/* Nothing under way here: no pass half done, no round waiting. */
static bool
idle(WorkerState *state)
{
	return !state->pass.running && pcar_destruction_round_keys(&state->rounds) == NIL;
}

/*
 * Other databases wait for a worker: leave at once if idle, else after a
 * nap of work here (the database goes back in line, first among equals).
 */
static bool
should_leave(WorkerState *state, TimestampTz now)
{
	if (pcar_shared_databases_waiting() == 0)
		return false;
	return idle(state) ||
		TimestampDifferenceExceeds(state->visit_started_at, now, pcar_worker_naptime * 1000);
}

static void
leave(WorkerState *state, Oid dboid, bool extension_missing)
{
	PcarWorkerMemo memo;

	memset(&memo, 0, sizeof(memo));
	memo.policies_checked_at = state->last_policy_check;
	memo.pass_due_at = state->pass.next_at;
	memo.idle_passes = state->pass.idle_passes;
	memo.hourly_reports_at = state->hourly_reports_at;
	memo.last_priority_valid = state->drain.last_priority_valid;
	memo.last_priority = state->drain.last_priority;
	pcar_shared_worker_leaving(dboid, &memo, !idle(state), extension_missing);
	proc_exit(0);
}

/* The worker's own settings: nothing from the path, no endless lock wait. */
static void
apply_settings(void)
{
	char		timeout[32];

	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	snprintf(timeout, sizeof(timeout), "%d", pcar_worker_lock_timeout);
	SetConfigOption("lock_timeout", timeout, PGC_SUSET, PGC_S_OVERRIDE);
}

void
pcar_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	MemoryContext worker_context;
	WorkerState state;
	PcarWorkerMemo memo;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (!pcar_shared_claim_worker_slot(dboid, &memo))
		proc_exit(0);			/* another worker serves this database, or it is being dropped */

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	/* the worker runs user statements as table owners */
	apply_settings();
	SetConfigOption("application_name", "pgcrypt_at_rest worker", PGC_USERSET, PGC_S_SESSION);

	worker_context = AllocSetContextCreate(TopMemoryContext, "pgcrypt_at_rest worker",
										   ALLOCSET_DEFAULT_SIZES);
	memset(&state, 0, sizeof(state));
	state.loop_context = AllocSetContextCreate(worker_context, "pgcrypt_at_rest worker turn",
											   ALLOCSET_DEFAULT_SIZES);
	state.visit_started_at = GetCurrentTimestamp();
	state.last_policy_check = memo.policies_checked_at;
	state.pass.next_at = memo.pass_due_at;
	state.pass.idle_passes = memo.idle_passes;
	state.hourly_reports_at = memo.hourly_reports_at;
	pcar_drain_state_init(&state.drain, worker_context);
	state.drain.in_worker = true;
	state.drain.stopped_in_relid = memo.batch_relid;
	state.drain.last_priority_valid = memo.last_priority_valid;
	state.drain.last_priority = memo.last_priority;
	pcar_drain_register_overrun_timeout();
	pcar_destruction_rounds_init(&state.rounds, worker_context);

	/* work signalled before this visit began is this visit's */
	if (pcar_shared_take_work_signal(dboid))
	{
		state.pass.next_at = 0;
		state.last_policy_check = 0;
	}

	for (;;)
	{
		long		ms;
		TimestampTz now;

		/* a cancel aimed at a step that already ended must not end the worker */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			apply_settings();
		}
		MemoryContextSwitchTo(state.loop_context);
		MemoryContextReset(state.loop_context);
		state.rotated = false;
		state.destroyed = NIL;
		state.drain.statement_timeout_ms = pcar_worker_statement_timeout;
		state.drain.naptime_seconds = pcar_worker_naptime;

		if (in_transaction(check_installed, &state, "checking the extension") != NULL)
			proc_exit(1);
		if (!state.installed)
			leave(&state, dboid, true); /* the launcher comes back later */

		if (!pcar_worker_enabled)
		{
			pgstat_report_activity(STATE_IDLE, "paused: pgcrypt_at_rest.worker_enabled is off");
			if (should_leave(&state, GetCurrentTimestamp()))
				leave(&state, dboid, false);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 pcar_worker_naptime * 1000L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			continue;
		}

		now = GetCurrentTimestamp();
		for (size_t i = 0; i < lengthof(steps); i++)
			if (steps[i].due(&state, now))
				run_step(&steps[i], &state);

		if (should_leave(&state, GetCurrentTimestamp()))
			leave(&state, dboid, false);

		ms = sleep_ms(&state);
		if (ms > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		/* rotate_keyring() or the like: work to do (the launcher's wake-ups are not) */
		if (pcar_shared_take_work_signal(dboid))
		{
			state.pass.next_at = 0;
			state.last_policy_check = 0;
		}
	}
}
