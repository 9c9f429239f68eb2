/*
 * launcher.c
 *		One launcher per cluster, connected to no database, starts a rotation
 *		worker in every database that accepts connections and is not a
 *		template.  A worker leaves at once where the extension is not
 *		installed; the launcher tries again a nap later, or at once when
 *		CREATE EXTENSION (or rotate_keyring) asks for it.  Which database has
 *		a running worker is kept in shared memory (shared_state.c), so a
 *		restarted launcher never starts a second one.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "launcher.h"
#include "shared_state.h"

#define STOP_WORKER_TIMEOUT_MS	10000

static ProcessUtility_hook_type prev_process_utility = NULL;

/*
 * When the launcher last started a worker for each database, in its own
 * memory: shared slots are only for running workers, so databases without
 * the extension (whose workers leave at once) never use one up.
 */
typedef struct LastStart
{
	Oid			dboid;			/* hash key */
	TimestampTz at;
	int			naps;			/* wait this many naps before the next start */
	bool		failure_logged;
} LastStart;

static HTAB *last_starts = NULL;

/*
 * A worker that is not running any more left (most often: no extension
 * there), so each start waits twice as long as the last, up to 16 naps;
 * CREATE EXTENSION asks for a start at once and resets it.
 */
static LastStart *
start_due(Oid dboid, TimestampTz now, int naptime_ms, bool force)
{
	LastStart  *entry;
	bool		found;

	if (last_starts == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(LastStart);
		last_starts = hash_create("pgcrypt_at_rest launcher starts", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS);
	}
	entry = hash_search(last_starts, &dboid, HASH_ENTER, &found);
	if (!found || force)
	{
		entry->naps = 1;
		entry->failure_logged = false;
	}
	else if (!TimestampDifferenceExceeds(entry->at, now, naptime_ms * entry->naps))
		return NULL;
	else if (entry->at != 0)
		entry->naps = Min(entry->naps * 2, 16);
	entry->at = now;
	return entry;
}

static void
register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 10;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pgcrypt_at_rest");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "pcar_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pgcrypt_at_rest launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pgcrypt_at_rest launcher");
	RegisterBackgroundWorker(&worker);
}

static bool
start_worker(Oid dboid, LastStart *entry)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pgcrypt_at_rest");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "pcar_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pgcrypt_at_rest worker for database %u", dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "pgcrypt_at_rest worker");
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		if (!entry->failure_logged)
			ereport(LOG,
					(errmsg("pgcrypt_at_rest could not start a rotation worker for database %u", dboid),
					 errhint("Raise max_worker_processes: the launcher needs one per database with the extension.")));
		entry->failure_logged = true;
		entry->at = 0;			/* not started: due again next time */
		entry->naps = 1;
		return false;
	}
	entry->failure_logged = false;
	return true;
}

/* Databases a worker may connect to, in the launcher's memory context. */
static Oid *
list_databases(int *count)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	MemoryContext caller = CurrentMemoryContext;
	int			allocated = 16;
	Oid		   *dboids = palloc(sizeof(Oid) * allocated);

	*count = 0;
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		if (db->datistemplate || !db->datallowconn)
			continue;
		if (*count == allocated)
		{
			MemoryContext old = MemoryContextSwitchTo(caller);

			allocated *= 2;
			dboids = repalloc(dboids, sizeof(Oid) * allocated);
			MemoryContextSwitchTo(old);
		}
		dboids[(*count)++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	return dboids;
}

void
pcar_launcher_main(Datum main_arg)
{
	MemoryContext loop_context;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pcar_shared_set_launcher();
	/* the launcher starts with the server, and reloads with it */
	pcar_warn_if_parameters_logged();

	loop_context = AllocSetContextCreate(TopMemoryContext, "pgcrypt_at_rest launcher",
										 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		int			naptime_ms = pcar_worker_naptime * 1000;
		TimestampTz now = GetCurrentTimestamp();
		Oid			requested;
		Oid		   *dboids;
		int			count;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			pcar_warn_if_parameters_logged();
		}

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		pgstat_report_activity(STATE_RUNNING, "looking for databases");

		requested = pcar_shared_take_start_request();
		dboids = list_databases(&count);
		pcar_shared_forget_databases_except(dboids, count);
		pcar_shared_clear_stale_stop_requests(now, naptime_ms);
		for (int i = 0; i < count; i++)
		{
			LastStart  *entry;

			if (!pcar_shared_may_start_worker(dboids[i]))
				continue;
			entry = start_due(dboids[i], now, naptime_ms, dboids[i] == requested);
			/* no free slot: the others wait for the next round too */
			if (entry != NULL && !start_worker(dboids[i], entry))
				break;
		}

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Statements that need a database without connections: stop our worker
 * there first, or they fail with "being accessed by other users".
 */
static const char *
database_needing_no_connections(Node *parsetree)
{
	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			return ((DropdbStmt *) parsetree)->dbname;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				return ((RenameStmt *) parsetree)->subname;
			return NULL;
		case T_AlterDatabaseStmt:
			return ((AlterDatabaseStmt *) parsetree)->dbname;
		case T_CreatedbStmt:
			{
				ListCell   *option;

				foreach(option, ((CreatedbStmt *) parsetree)->options)
				{
					DefElem    *def = lfirst_node(DefElem, option);

					if (strcmp(def->defname, "template") == 0)
						return defGetString(def);
				}
				return NULL;
			}
		default:
			return NULL;
	}
}

static void
pcar_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	const char *dbname = database_needing_no_connections(pstmt->utilityStmt);

	if (dbname != NULL)
	{
		Oid			dboid = get_database_oid(dbname, true);

		/* only for a role the statement can succeed for: anyone else could stop it */
		if (OidIsValid(dboid) && dboid != MyDatabaseId &&
			pg_database_ownercheck(dboid, GetUserId()))
			(void) pcar_shared_stop_worker(dboid, STOP_WORKER_TIMEOUT_MS);
	}

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

void
pcar_launcher_init(void)
{
	register_launcher();
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = pcar_process_utility;
}
