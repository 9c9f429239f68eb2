/*
 * launcher.c
 *		One launcher per cluster, connected to no database, runs a pool of at
 *		most pgcrypt_at_rest.max_workers rotation workers over every database
 *		that accepts connections and is not a template.  A worker leaves at
 *		once where the extension is not installed; the launcher visits such a
 *		database less and less often, and at once when CREATE EXTENSION (or
 *		rotate_keyring) signals work there.  Which database has a worker,
 *		and which waits for one, is kept in shared memory (shared_state.c),
 *		so a restarted launcher never starts a second one.
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

/* Workers the launcher registered, until they have ended. */
typedef struct StartedWorker
{
	Oid			dboid;			/* hash key */
	BackgroundWorkerHandle *handle;
} StartedWorker;

static HTAB *started_workers = NULL;
static TimestampTz no_slot_logged_at = 0;

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
start_worker(Oid dboid)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	StartedWorker *entry;
	bool		found;
	bool		registered;
	MemoryContext old;

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

	/* the handle outlives the loop's memory */
	old = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(old);
	if (!registered)
	{
		/* once in ten minutes: it stays so until the setting changes */
		if (TimestampDifferenceExceeds(no_slot_logged_at, GetCurrentTimestamp(), 600 * 1000))
			ereport(LOG,
					(errmsg("pgcrypt_at_rest could not start a rotation worker: no background worker slot is free"),
					 errdetail("Databases wait for a worker; pgcrypt_at_rest.rotation_workers shows which."),
					 errhint("Raise max_worker_processes above pgcrypt_at_rest.max_workers plus what other background workers and parallel queries need.")));
		no_slot_logged_at = GetCurrentTimestamp();
		return false;
	}
	entry = hash_search(started_workers, &dboid, HASH_ENTER, &found);
	entry->handle = handle;
	return true;
}

/* Workers that ended: a database whose worker never ran is due again later. */
static void
reap_workers(TimestampTz now)
{
	HASH_SEQ_STATUS status;
	StartedWorker *entry;

	hash_seq_init(&status, started_workers);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(entry->handle, &pid) != BGWH_STOPPED)
			continue;
		pcar_shared_start_ended(entry->dboid, now);
		pfree(entry->handle);
		(void) hash_search(started_workers, &entry->dboid, HASH_REMOVE, NULL);
	}
}

/* Databases a worker may connect to, with their names, in the launcher's memory context. */
static Oid *
list_databases(int *count, char ***names)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	MemoryContext caller = CurrentMemoryContext;
	int			allocated = 16;
	Oid		   *dboids = palloc(sizeof(Oid) * allocated);

	*names = palloc(sizeof(char *) * allocated);
	*count = 0;
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);
		MemoryContext old;

		if (db->datistemplate || !db->datallowconn)
			continue;
		old = MemoryContextSwitchTo(caller);
		if (*count == allocated)
		{
			allocated *= 2;
			dboids = repalloc(dboids, sizeof(Oid) * allocated);
			*names = repalloc(*names, sizeof(char *) * allocated);
		}
		(*names)[*count] = pstrdup(NameStr(db->datname));
		dboids[(*count)++] = db->oid;
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	return dboids;
}

static const char *
database_name(Oid dboid, const Oid *dboids, char **names, int count)
{
	for (int i = 0; i < count; i++)
		if (dboids[i] == dboid)
			return names[i];
	return "?";
}

/*
 * The launcher serves every database from a pool of at most max_workers
 * workers.  A worker serves one database at a time and leaves when others
 * wait (at once if its database has nothing under way, else after a nap of
 * work); each database is visited at least once a nap while slots allow,
 * signalled work (a rotation, a deprecation, CREATE EXTENSION) first.
 */
void
pcar_launcher_main(Datum main_arg)
{
	MemoryContext loop_context;
	HASHCTL		ctl;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pcar_shared_set_launcher();
	/* the launcher starts with the server, and reloads with it */
	pcar_warn_if_parameters_logged();

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(StartedWorker);
	started_workers = hash_create("pgcrypt_at_rest started workers", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS);
	loop_context = AllocSetContextCreate(TopMemoryContext, "pgcrypt_at_rest launcher",
										 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		int			naptime_ms = pcar_worker_naptime * 1000;
		TimestampTz now = GetCurrentTimestamp();
		Oid		   *dboids;
		char	  **names;
		int			count;
		Oid		   *to_start;
		Oid		   *newly_waiting;
		int			nstart;
		int			nwaiting;

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

		dboids = list_databases(&count, &names);
		reap_workers(now);
		pcar_shared_sync_databases(dboids, count);
		pcar_shared_clear_stale_stop_requests(now, naptime_ms);

		to_start = palloc(sizeof(Oid) * PCAR_MAX_DATABASES);
		newly_waiting = palloc(sizeof(Oid) * PCAR_MAX_DATABASES);
		nstart = pcar_shared_schedule(now, naptime_ms, pcar_max_workers,
									  (int) hash_get_num_entries(started_workers),
									  to_start, newly_waiting, &nwaiting);
		for (int i = 0; i < nstart; i++)
			if (!start_worker(to_start[i]))
				pcar_shared_start_failed(to_start[i], now);
		for (int i = 0; i < nwaiting; i++)
			ereport(LOG,
					(errmsg("pgcrypt_at_rest: database \"%s\" is waiting for a rotation worker",
							database_name(newly_waiting[i], dboids, names, count)),
					 errdetail("The workers the pool may run (pgcrypt_at_rest.max_workers = %d, or fewer if background worker slots run out) serve other databases; it gets one in turn.",
							   pcar_max_workers),
					 errhint("Raise pgcrypt_at_rest.max_workers (and max_worker_processes) if databases often wait.")));

		pgstat_report_activity(STATE_IDLE, NULL);
		/* woken when a worker ends, when work is signalled, and to look again each nap */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(naptime_ms, 1000), PG_WAIT_EXTENSION);
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
