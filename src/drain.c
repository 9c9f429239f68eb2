/*
 * drain.c
 *		Finding every value under a deprecated key and re-encrypting it under
 *		its keyring's active key.
 *
 * A pass visits every column that can hold encrypted values (of the type, a
 * domain over it, or an array or composite type containing it at any
 * depth: encrypted_columns.c) in tables, partitions and inheritance
 * children, in (table, column) order, and each column in physical order.
 * A batch reads the table's heap from where the last one stopped, keeps up
 * to rotation_batch_size rows holding a value under a deprecated key, locks
 * each (skipping rows an application holds: the next pass finds them),
 * re-encrypts its values in C, and writes the row back in place without
 * triggers or rules (row_rewrite.c).  Where the pass stands is kept in
 * rotation_pass, updated in the batch's own transaction, so a crash resumes
 * from the last committed batch.
 *
 * Whose rights: the counts read heaps directly (value_census.c) and run no
 * user code.  A batch runs as the table's owner in a security-restricted
 * context with pinned settings (restricted.c); the owner's code that runs
 * is the column's context expression, its domain constraints, the table's
 * CHECK constraints, generated columns, partition bound and index
 * expressions and predicates.  No SQL is planned on the user's table.
 *
 * A value bound to a context can be re-encrypted only if the column
 * declares where its context comes from (context_expression.c).  Values
 * that cannot be re-encrypted are counted with the reason in
 * rotation_progress and keep their key alive.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/itemptr.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "ciphertext.h"
#include "context_expression.h"
#include "drain.h"
#include "encrypted_columns.h"
#include "encrypted_type.h"
#include "encrypted_values.h"
#include "guc.h"
#include "key_cache.h"
#include "key_store.h"
#include "pgcrypt_at_rest.h"
#include "restricted.h"
#include "rotation_store.h"
#include "row_rewrite.h"
#include "shared_state.h"
#include "sodium_provider.h"
#include "value_census.h"

typedef struct DrainKey
{
	int32		key_id;
	char		keyring[NAMEDATALEN];
	bool		usable;			/* old and new keys opened */
	char	   *unusable_reason;
	int32		new_key_id;
	uint8	   *old_key;		/* both in the batch's locked buffer */
	uint8	   *new_key;
	int64		reencrypted;	/* values, in this batch */
	int64		failed;
	const char *failure_reason;
} DrainKey;

/*
 * The priority a new pass drains: the next lower one after the last pass's,
 * or the highest.  found is sorted by priority, highest first.
 */
static int32
choose_priority(const PcarKeyName *found, int nfound, List *exclude_keys,
				const PcarDrainState *state)
{
	bool		any = false;
	int32		top = 0;

	for (int i = 0; i < nfound; i++)
	{
		if (list_member_int(exclude_keys, found[i].key_id))
			continue;
		if (!any)
			top = found[i].priority;
		any = true;
		if (state->last_priority_valid && found[i].priority < state->last_priority)
			return found[i].priority;
	}
	return top;
}

/* Deprecated keys of that priority still being drained, minus the excluded ones. */
static DrainKey *
load_drain_keys(const PcarKeyName *found, int nfound, List *exclude_keys, int32 priority,
				int *nkeys)
{
	DrainKey   *keys = palloc0(sizeof(DrainKey) * Max(nfound, 1));

	*nkeys = 0;
	for (int i = 0; i < nfound; i++)
	{
		if (list_member_int(exclude_keys, found[i].key_id) || found[i].priority != priority)
			continue;
		keys[*nkeys].key_id = found[i].key_id;
		strlcpy(keys[*nkeys].keyring, found[i].keyring, NAMEDATALEN);
		(*nkeys)++;
	}
	return keys;
}

/* Whether keys of a lower priority than this one wait for a pass. */
static bool
lower_priorities_wait(const PcarKeyName *found, int nfound, List *exclude_keys, int32 priority)
{
	for (int i = 0; i < nfound; i++)
		if (!list_member_int(exclude_keys, found[i].key_id) && found[i].priority < priority)
			return true;
	return false;
}

/*
 * Opens each key and its keyring's active key, copying the material into
 * the batch's own locked buffer: a cache flush during the batch's queries
 * would free the cache's copy.  A key that cannot be opened (no copy for
 * this server, say) is marked, with the reason, instead of failing the batch.
 */
static uint8 *
open_drain_keys(DrainKey *keys, int nkeys)
{
	uint8	   *buffer = pcar_secure_alloc(Max(nkeys, 1) * 2 * PCAR_DATA_KEY_BYTES);

	for (int i = 0; i < nkeys; i++)
	{
		DrainKey   *key = &keys[i];
		MemoryContext context = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;

		key->old_key = buffer + i * 2 * PCAR_DATA_KEY_BYTES;
		key->new_key = key->old_key + PCAR_DATA_KEY_BYTES;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(context);
		PG_TRY();
		{
			const uint8 *new_key;

			memcpy(key->old_key, pcar_key_cache_get(key->key_id), PCAR_DATA_KEY_BYTES);
			key->new_key_id = pcar_key_cache_active(key->keyring, strlen(key->keyring), &new_key);
			memcpy(key->new_key, new_key, PCAR_DATA_KEY_BYTES);
			key->usable = true;
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			ErrorData  *error;

			MemoryContextSwitchTo(context);
			error = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			key->usable = false;
			key->unusable_reason = pstrdup(error->message);
			FreeErrorData(error);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;
	}
	return buffer;
}

/*
 * The columns of the current pass that can be read and rewritten, found
 * when it starts and kept in the caller's state: the catalog query is the
 * most expensive statement of a batch in a database with many tables.  A
 * column created during the pass waits for the next one; every count before
 * a key is destroyed looks for columns afresh.
 */
static PcarColumn *
columns_of_pass(PcarDrainState *state, TimestampTz pass_started_at, int *ncolumns)
{
	if (state->pass_columns == NULL || state->pass_columns_for != pass_started_at)
	{
		int			nfound;
		PcarColumn *found = pcar_encrypted_columns(&nfound);
		const char *reason;

		if (state->pass_columns != NULL)
			pfree(state->pass_columns);
		state->pass_columns = MemoryContextAlloc(state->context, sizeof(PcarColumn) * Max(nfound, 1));
		state->pass_ncolumns = 0;
		for (int c = 0; c < nfound; c++)
			if (pcar_column_is_readable(&found[c], &reason))
				state->pass_columns[state->pass_ncolumns++] = found[c];
		state->pass_columns_for = pass_started_at;
	}
	*ncolumns = state->pass_ncolumns;
	return state->pass_columns;
}

/* Columns c.. of the same table as columns[c]. */
static int
columns_of_table(const PcarColumn *columns, int ncolumns, int c)
{
	int			n = 1;

	while (c + n < ncolumns && columns[c + n].relid == columns[c].relid)
		n++;
	return n;
}

/* Something every key of the pass must show for a column. */
static void
note_on_keys(Oid relid, AttrNumber attnum, const DrainKey *keys, int nkeys, const char *message)
{
	int32	   *key_ids = palloc(sizeof(int32) * Max(nkeys, 1));

	for (int k = 0; k < nkeys; k++)
		key_ids[k] = keys[k].key_id;
	pcar_progress_note(relid, attnum, nkeys, key_ids, message);
}

/*
 * At a pass's start and end: the values left per key and column, written to
 * rotation_progress.  At the end, what is left is what could not be
 * re-encrypted in this pass; unusable keys and materialized views say why,
 * and keys with nothing left anywhere are returned in *drained_keys.
 */
static void
record_counts(PcarColumn *columns, int ncolumns, DrainKey *keys, int nkeys, bool pass_end,
			  bool wait, List **drained_keys)
{
	int32	   *key_ids = palloc(sizeof(int32) * Max(nkeys, 1));
	int64	   *totals = palloc0(sizeof(int64) * Max(nkeys, 1));
	const char **reasons = palloc(sizeof(char *) * Max(nkeys, 1));
	bool		complete = true;

	for (int k = 0; k < nkeys; k++)
		key_ids[k] = keys[k].key_id;

	for (int c = 0; c < ncolumns;)
	{
		int			n = columns_of_table(columns, ncolumns, c);
		int64	   *counts = palloc0(sizeof(int64) * n * Max(nkeys, 1));
		PcarCensusResult census = pcar_census_table(&columns[c], n, key_ids, nkeys, counts,
													PCAR_CENSUS_VISIBLE, wait);

		/*
		 * These counts are for rotation_status: unlike the count before a
		 * key is destroyed, they need no table to stay locked, and a pass
		 * over thousands of tables must not fill the shared lock table.
		 */
		if (census == PCAR_CENSUS_COUNTED)
			UnlockRelationOid(columns[c].relid, AccessShareLock);

		if (census == PCAR_CENSUS_BUSY || census == PCAR_CENSUS_UNSUPPORTED)
		{
			complete = false;
			for (int j = 0; j < n && pass_end; j++)
				note_on_keys(columns[c + j].relid, columns[c + j].attnum, keys, nkeys,
							 census == PCAR_CENSUS_BUSY ?
							 "the table was locked by another transaction: its values are counted again at the next pass" :
							 "only tables of the heap access method can be counted");
		}
		else
			for (int j = 0; j < n; j++)
			{
				int64	   *column_counts = &counts[j * nkeys];

				for (int k = 0; k < nkeys; k++)
				{
					totals[k] += column_counts[k];
					reasons[k] = NULL;
					if (pass_end && column_counts[k] > 0)
						reasons[k] = !keys[k].usable ? keys[k].unusable_reason :
							columns[c + j].relkind == RELKIND_MATVIEW ?
							"a materialized view: REFRESH it once its sources are drained" :
							NULL;
				}
				pcar_progress_counted(columns[c + j].relid, columns[c + j].attnum, nkeys, key_ids,
									  column_counts, pass_end, reasons);
			}
		pfree(counts);
		c += n;
	}

	if (pass_end)
	{
		int			nfound;
		PcarColumn *found = pcar_encrypted_columns(&nfound);

		/* shown on every key: none is destroyed while such a column exists */
		for (int c = 0; c < nfound; c++)
		{
			const char *reason;

			if (!pcar_column_is_readable(&found[c], &reason))
			{
				note_on_keys(found[c].relid, found[c].attnum, keys, nkeys, reason);
				complete = false;
			}
		}

		for (int k = 0; k < nkeys && complete; k++)
			if (totals[k] == 0)
				*drained_keys = lappend_int(*drained_keys, keys[k].key_id);
	}
}

static void
record_batch(const PcarColumn *column, DrainKey *keys, int nkeys)
{
	for (int k = 0; k < nkeys; k++)
		if (keys[k].reencrypted > 0 || keys[k].failed > 0)
			pcar_progress_batch(column->relid, column->attnum, keys[k].key_id,
								keys[k].reencrypted, keys[k].failed, keys[k].failure_reason);
}

static DrainKey *
find_key(DrainKey *keys, int nkeys, int32 key_id)
{
	for (int k = 0; k < nkeys; k++)
		if (keys[k].key_id == key_id)
			return &keys[k];
	return NULL;
}

/* Encrypts under the key's replacement; the plaintext is wiped even on error. */
static void
seal_then_wipe(uint8 *out, const DrainKey *key, uint8 *plaintext, size_t plaintext_len,
			   const uint8 *ctx, size_t ctx_len)
{
	PG_TRY();
	{
		pcar_ciphertext_seal(out, (uint32) key->new_key_id, key->new_key,
							 plaintext, plaintext_len, ctx, ctx_len);
	}
	PG_CATCH();
	{
		pcar_wipe(plaintext, plaintext_len);
		PG_RE_THROW();
	}
	PG_END_TRY();
	pcar_wipe(plaintext, plaintext_len);
}

/* What re-encrypting the values of one row needs to know. */
typedef struct RowContext
{
	DrainKey   *keys;
	int			nkeys;
	const uint8 *context;
	size_t		context_len;
	const char *failure_reason;
} RowContext;

/* A PcarValueReplacer: the value under its key's replacement, or NULL. */
static Encrypted *
reencrypt_value(Encrypted *value, void *arg)
{
	RowContext *row = arg;
	const uint8 *data = ENCRYPTED_DATA(value);
	size_t		len = ENCRYPTED_LEN(value);
	DrainKey   *key;
	size_t		plaintext_len;
	uint8	   *plaintext;
	Encrypted  *reencrypted;

	if (pcar_ciphertext_problem(data, len) != NULL)
		return NULL;
	key = find_key(row->keys, row->nkeys, (int32) pcar_ciphertext_key_id(data));
	if (key == NULL || !key->usable)
		return NULL;

	plaintext_len = pcar_ciphertext_plaintext_len(len);
	/* both buffers first; the plaintext is wiped whatever happens next */
	plaintext = palloc(Max(plaintext_len, 1));
	reencrypted = palloc(VARHDRSZ + PCAR_OVERHEAD + plaintext_len);
	if (!pcar_ciphertext_open(plaintext, data, len, key->old_key, row->context, row->context_len))
	{
		key->failed++;
		key->failure_reason = row->failure_reason;
		pfree(plaintext);
		pfree(reencrypted);
		return NULL;
	}
	SET_VARSIZE(reencrypted, VARHDRSZ + PCAR_OVERHEAD + plaintext_len);
	seal_then_wipe((uint8 *) VARDATA(reencrypted), key, plaintext, plaintext_len,
				   row->context, row->context_len);
	pfree(plaintext);
	/* not counted toward max_encryptions: a copy of existing data, which
	 * would otherwise rotate a keyring with more values than its limit
	 * again after every drain */
	key->reencrypted++;
	return reencrypted;
}

typedef struct KeySet
{
	const int32 *key_ids;
	int			nkeys;
	bool		found;
} KeySet;

static void
note_key_in_set(int32 key_id, void *arg)
{
	KeySet	   *set = arg;

	for (int k = 0; k < set->nkeys && !set->found; k++)
		set->found = set->key_ids[k] == key_id;
}

/*
 * Up to rotation_batch_size rows after *position holding a value under one
 * of key_ids, in physical order, read from the heap: no user code runs.
 */
static ItemPointerData *
find_rows(Relation rel, AttrNumber attnum, Oid typid, ItemPointer position,
		  const int32 *key_ids, int nkeys, Snapshot snapshot, int *nrows)
{
	ItemPointerData *rows = palloc(sizeof(ItemPointerData) * pcar_rotation_batch_size);
	ItemPointerData last;
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	TableScanDesc scan;
	PcarValueWalk *walk = pcar_value_walk_create();
	MemoryContext per_row = AllocSetContextCreate(CurrentMemoryContext, "pgcrypt_at_rest rows",
												  ALLOCSET_DEFAULT_SIZES);
	MemoryContext caller = CurrentMemoryContext;

	*nrows = 0;
	ItemPointerSet(&last, MaxBlockNumber, MaxOffsetNumber);
	scan = table_beginscan_tidrange(rel, snapshot, position, &last);
	while (*nrows < pcar_rotation_batch_size &&
		   table_scan_getnextslot_tidrange(scan, ForwardScanDirection, slot))
	{
		KeySet		set = {key_ids, nkeys, false};
		bool		isnull;
		Datum		value;

		CHECK_FOR_INTERRUPTS();
		if (ItemPointerCompare(&slot->tts_tid, position) <= 0)
			continue;
		value = slot_getattr(slot, attnum, &isnull);
		if (isnull)
			continue;
		MemoryContextSwitchTo(per_row);
		pcar_visit_key_ids(walk, value, typid, note_key_in_set, &set);
		MemoryContextSwitchTo(caller);
		MemoryContextReset(per_row);
		if (set.found)
			rows[(*nrows)++] = slot->tts_tid;
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextDelete(per_row);
	return rows;
}

static TimeoutId overrun_timeout = MAX_TIMEOUTS;
static volatile sig_atomic_t overran = false;

/* In a signal handler: as die() does, which nothing can catch. */
static void
owner_code_overran(void)
{
	overran = true;
	ProcDiePending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

void
pcar_drain_register_overrun_timeout(void)
{
	overrun_timeout = RegisterTimeout(USER_TIMEOUT, owner_code_overran);
}

static void
disable_owner_code_timeouts(void)
{
	disable_timeout(STATEMENT_TIMEOUT, false);
	if (overrun_timeout != MAX_TIMEOUTS)
		disable_timeout(overrun_timeout, false);
}

/* Whether the error was raised in that source file of ours or PostgreSQL's. */
static bool
raised_in(const ErrorData *error, const char *source)
{
	const char *file = error->filename ? strrchr(error->filename, '/') : NULL;

	file = file ? file + 1 : error->filename;
	return file != NULL && strcmp(file, source) == 0;
}

/* Whether the error is row_rewrite.c's refusal, whose hint is ours. */
static bool
refused_here(const ErrorData *error)
{
	return raised_in(error, "row_rewrite.c");
}

/*
 * Whether the error is a real cancel or timeout, raised where PostgreSQL
 * handles interrupts: a table's code can raise the same SQLSTATE itself.
 */
static bool
interrupted(const ErrorData *error, int sqlerrcode)
{
	return error->sqlerrcode == sqlerrcode && raised_in(error, "postgres.c");
}

/*
 * Locks each row found, evaluates its context, re-encrypts its values and
 * writes it back: the part of a batch that runs the table owner's code.
 */
static void
rewrite_rows(Relation rel, AttrNumber attnum, Oid typid, const char *expression,
			 const ItemPointerData *rows, int nrows, RowContext *row, Snapshot snapshot)
{
	PcarRowRewrite *rewrite = pcar_row_rewrite_begin(rel, attnum);
	PcarContextExpression *context = expression ? pcar_context_compile(rel, expression) : NULL;
	PcarValueWalk *walk = pcar_value_walk_create();
	MemoryContext per_row = AllocSetContextCreate(CurrentMemoryContext, "pgcrypt_at_rest row",
												  ALLOCSET_DEFAULT_SIZES);
	MemoryContext caller = CurrentMemoryContext;

	for (int i = 0; i < nrows; i++)
	{
		ItemPointerData tid = rows[i];
		TupleTableSlot *locked;
		bool		isnull;
		bool		replaced;
		Datum		value;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(per_row);
		MemoryContextSwitchTo(per_row);
		/* the latest version, which may differ from the one found */
		locked = pcar_row_rewrite_lock(rewrite, &tid, snapshot);
		value = locked ? slot_getattr(locked, attnum, &isnull) : (Datum) 0;
		if (locked != NULL && !isnull)
		{
			bytea	   *context_value = context ? pcar_context_evaluate(context, locked) : NULL;

			row->context = context_value ? (const uint8 *) VARDATA_ANY(context_value) : NULL;
			row->context_len = context_value ? VARSIZE_ANY_EXHDR(context_value) : 0;
			value = pcar_replace_values(walk, value, typid, reencrypt_value, row, &replaced);
			if (replaced)
				pcar_row_rewrite_update(rewrite, value);
		}
		MemoryContextSwitchTo(caller);
	}
	MemoryContextDelete(per_row);
	pcar_row_rewrite_end(rewrite);
	/* later batches of this transaction (drain()) see the new versions */
	CommandCounterIncrement();
}

/*
 * One batch on one column, from the row after *position; returns the number
 * of rows found, and moves *position to the last one.  In the worker, sets
 * *busy without waiting when another session holds a lock that keeps us out
 * of the table.  The table's owner's code runs for at most the state's
 * statement timeout.
 */
static uint64
reencrypt_batch(const PcarDrainState *state, const PcarColumn *column, ItemPointer position,
				DrainKey *keys, int nkeys, bool *busy)
{
	int32	   *usable_ids = palloc(sizeof(int32) * Max(nkeys, 1));
	int			nusable = 0;
	Relation	rel;
	Form_pg_attribute att;
	Oid			typid;
	char	   *expression;
	bool		stale_context;
	RowContext	row = {keys, nkeys, NULL, 0, NULL};
	PcarRestricted r;
	Snapshot	snapshot;
	ItemPointerData *rows;
	int			nrows;

	*busy = false;
	for (int k = 0; k < nkeys; k++)
		if (keys[k].usable)
			usable_ids[nusable++] = keys[k].key_id;
	if (nusable == 0)
		return 0;

	if (!pcar_lock_table(column->relid, RowExclusiveLock, !state->in_worker))
	{
		*busy = true;
		return 0;
	}
	rel = try_table_open(column->relid, NoLock);
	if (rel == NULL)
		return 0;				/* dropped since the pass started */
	att = column->attnum <= RelationGetDescr(rel)->natts ?
		TupleDescAttr(RelationGetDescr(rel), column->attnum - 1) : NULL;
	if (att == NULL || att->attisdropped)
	{
		table_close(rel, NoLock);
		return 0;
	}
	typid = att->atttypid;

	expression = pcar_context_lookup(column->relid, column->attnum, &stale_context);
	/*
	 * A value that does not authenticate was bound to another context, or
	 * forged or damaged: the two look the same, so the key stays, and the
	 * reason names both and the way out.
	 */
	row.failure_reason = expression ?
		"does not authenticate with the declared context: bound to another context, or forged or damaged; pgcrypt_at_rest.rows_under_key() lists them, pgcrypt_at_rest.destroy_key() destroys the key anyway" :
		stale_context ?
		"the column's context was declared when the table had another owner: declare it again with pgcrypt_at_rest.set_column_context()" :
		"does not authenticate without a context: bound to a context the column does not declare (declare it with pgcrypt_at_rest.set_column_context()), or forged or damaged; pgcrypt_at_rest.rows_under_key() lists them, pgcrypt_at_rest.destroy_key() destroys the key anyway";

	/* from here on, everything runs as the table's owner */
	pcar_as_role_begin(&r, rel->rd_rel->relowner);
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	rows = find_rows(rel, column->attnum, typid, position, usable_ids, nusable, snapshot, &nrows);
	if (nrows > 0)
	{
		bool		timed = state->statement_timeout_ms > 0;

		/* timers, not settings: the owner's code cannot lift them */
		if (timed)
		{
			enable_timeout_after(STATEMENT_TIMEOUT, state->statement_timeout_ms);
			if (overrun_timeout != MAX_TIMEOUTS)
				enable_timeout_after(overrun_timeout, 2 * state->statement_timeout_ms);
		}
		PG_TRY();
		{
			rewrite_rows(rel, column->attnum, typid, expression, rows, nrows, &row, snapshot);
		}
		PG_CATCH();
		{
			if (timed)
				disable_owner_code_timeouts();
			PG_RE_THROW();
		}
		PG_END_TRY();
		if (timed)
			disable_owner_code_timeouts();
		*position = rows[nrows - 1];
	}
	UnregisterSnapshot(snapshot);
	pcar_as_role_end(&r);
	table_close(rel, NoLock);
	return nrows;
}

/*
 * One drainer at a time per database, until its transaction ends: the
 * worker's batches and drain() would otherwise collide on rotation_pass
 * while holding locks on user rows.  A user lock (shown as "userlock" in
 * pg_locks), which no SQL function can take: an advisory lock could be
 * taken by any role, and would stop rotation.
 */
static bool
lock_drain(bool wait)
{
	LOCKTAG		tag;

	tag.locktag_field1 = MyDatabaseId;
	tag.locktag_field2 = 0x70636172;	/* "pcar" */
	tag.locktag_field3 = 0;
	tag.locktag_field4 = 1;
	tag.locktag_type = LOCKTAG_USERLOCK;
	tag.locktag_lockmethodid = USER_LOCKMETHOD;
	return LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * Reports a batch's failure on a table: to the log in the worker (unless
 * the same failure was logged recently), as a WARNING to drain()'s caller.
 * Without the error's detail: a failing CHECK's detail holds the row, which
 * whoever reads the log or called drain() may not read.  Nor the owner's
 * own hint, which is the owner's text.
 */
static char *
report_table_failure(const PcarDrainState *state, Oid relid, const ErrorData *error)
{
	char	   *name = get_rel_name(relid);
	int			length = strlen(error->message);
	char	   *message;
	const char *hint;
	bool		report;

	/* the owner's text: kept short, it goes to a table and the log at each failure */
	length = pg_mbcliplen(error->message, length, Min(length, 1000));
	message = psprintf("could not re-encrypt table \"%s\": %.*s%s",
					   name ? name : "(dropped)", length, error->message,
					   error->message[length] ? "..." : "");

	if (refused_here(error) && error->hint)
		hint = error->hint;
	else if (interrupted(error, ERRCODE_LOCK_NOT_AVAILABLE))
		hint = "Another session kept the table locked; it is tried again later.";
	else if (interrupted(error, ERRCODE_QUERY_CANCELED) || error->filename == NULL)
		hint = "The table's own code (a constraint, an index expression, a generated column or its context expression) ran longer than pgcrypt_at_rest.worker_statement_timeout; it is tried again later.";
	else
		hint = "The table's own code (a constraint, an index expression, a generated column or its context expression) failed as its owner; values it holds stay under their key until it succeeds.";

	report = pcar_failure_record(relid, message, state->naptime_seconds);
	if (!state->in_worker || report)
		ereport(state->in_worker ? LOG : WARNING,
				(errcode(error->sqlerrcode),
				 errmsg("%s", message),
				 errhint("%s", hint)));
	return message;
}

/* Whether the table's batches failed before and it is not due again yet. */
static bool
backing_off(const PcarDrainState *state, List *backing_off_relids, Oid relid)
{
	return state->in_worker && list_member_oid(backing_off_relids, relid);
}

/* The first column of the next table after column c, or ncolumns. */
static int
next_table(const PcarColumn *columns, int ncolumns, int c)
{
	return c + columns_of_table(columns, ncolumns, c);
}

void
pcar_drain_state_init(PcarDrainState *state, MemoryContext context)
{
	memset(state, 0, sizeof(*state));
	state->context = context;
}

/*
 * One batch on a table in a subtransaction of its own: true if it went
 * through; if not, nothing it did is left, and the failure is the table's
 * (recorded and reported, the pass goes on).  In drain(), a cancel (the
 * caller's, or their statement_timeout) ends the whole call.
 */
static bool
batch_on_table(const PcarDrainState *state, const PcarColumn *column, ItemPointer position,
			   DrainKey *keys, int nkeys, bool *busy, uint64 *nrows)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	/* if the worker is stopped in this batch, the next one knows where */
	if (state->in_worker)
		pcar_shared_set_batch_table(MyDatabaseId, column->relid);
	overran = false;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		*nrows = reencrypt_batch(state, column, position, keys, nkeys, busy);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *error;
		char	   *message;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = owner;

		/* drain()'s caller cancelled, or their statement_timeout: the whole call ends */
		if (!state->in_worker && interrupted(error, ERRCODE_QUERY_CANCELED))
			ReThrowError(error);

		/* what the batch did is undone */
		for (int k = 0; k < nkeys; k++)
		{
			keys[k].reencrypted = 0;
			keys[k].failed = 0;
			keys[k].failure_reason = NULL;
		}
		message = report_table_failure(state, column->relid, error);
		note_on_keys(column->relid, column->attnum, keys, nkeys, message);
		FreeErrorData(error);
		*nrows = 0;
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(context);
	CurrentResourceOwner = owner;

	/*
	 * Code that never checks for interrupts (some built-ins do not) outlives
	 * both timers and returns here with the worker's termination pending:
	 * the table stays marked, for the next worker to record.
	 */
	if (state->in_worker && !overran)
		pcar_shared_set_batch_table(MyDatabaseId, InvalidOid);
	return ok;
}

void
pcar_drain_batch(PcarDrainState *state, PcarDrainResult *result, List *exclude_keys)
{
	bool		wait = !state->in_worker;
	int			nfound;
	PcarKeyName *found;
	int			nkeys;
	DrainKey   *keys;
	int			ncolumns;
	PcarColumn *columns;
	PcarPassCursor cursor;
	int			c;
	uint8	   *key_buffer;
	List	   *backing_off_relids = NIL;
	List	   *failing_relids;

	result->pass_running = false;
	result->reencrypted = 0;
	result->drained_keys = NIL;
	result->lower_priorities_left = false;
	state->relid = InvalidOid;
	state->attnum = 0;

	if (!lock_drain(wait))
	{
		result->pass_running = true;	/* someone else drains: try again soon */
		return;
	}
	found = pcar_store_keys_to_drain(&nfound);
	pcar_pass_read(&cursor);
	/* the worker's pass in progress may be past some tables: start over, from the top */
	if (state->new_pass)
	{
		if (cursor.exists)
		{
			cursor.exists = false;
			pcar_pass_write(&cursor, false);
		}
		state->last_priority_valid = false;
	}
	state->new_pass = false;
	if (!cursor.exists)
		cursor.priority = choose_priority(found, nfound, exclude_keys, state);
	keys = load_drain_keys(found, nfound, exclude_keys, cursor.priority, &nkeys);
	if (nkeys == 0)
	{
		/* none left at this priority (or none at all): the pass is over */
		if (cursor.exists)
		{
			cursor.exists = false;
			pcar_pass_write(&cursor, false);
		}
		state->last_priority = cursor.priority;
		state->last_priority_valid = true;
		result->lower_priorities_left = lower_priorities_wait(found, nfound, exclude_keys,
															  cursor.priority);
		return;
	}

	/* a new pass starts now; its row gets this transaction's now() */
	columns = columns_of_pass(state,
							  cursor.exists ? cursor.started_at : GetCurrentTransactionStartTimestamp(),
							  &ncolumns);
	/* the last worker was stopped in a batch on this table: that is its failure */
	if (OidIsValid(state->stopped_in_relid))
	{
		ErrorData	stopped;

		memset(&stopped, 0, sizeof(stopped));
		stopped.sqlerrcode = ERRCODE_QUERY_CANCELED;
		stopped.message = "the worker was stopped during a batch; its own code may have ignored the cancel at worker_statement_timeout";
		note_on_keys(state->stopped_in_relid, 0, keys, nkeys,
					 report_table_failure(state, state->stopped_in_relid, &stopped));
		state->stopped_in_relid = InvalidOid;
	}
	failing_relids = pcar_failing_tables(&backing_off_relids);
	key_buffer = open_drain_keys(keys, nkeys);
	PG_TRY();
	{
		if (!cursor.exists)
		{
			Oid		   *relids = palloc(sizeof(Oid) * Max(ncolumns, 1));

			/* a new pass: count what there is to do, start at the first column */
			record_counts(columns, ncolumns, keys, nkeys, false, wait, NULL);
			for (int i = 0; i < ncolumns; i++)
				relids[i] = columns[i].relid;
			pcar_forget_tables_except(relids, ncolumns);
			cursor.exists = true;
			cursor.relid = ncolumns > 0 ? columns[0].relid : InvalidOid;
			cursor.attnum = ncolumns > 0 ? columns[0].attnum : 0;
			ItemPointerSet(&cursor.after, 0, 0);
			pcar_pass_write(&cursor, true);
		}

		/* the cursor's column, or the next one if it is gone */
		for (c = 0; c < ncolumns; c++)
			if (columns[c].relid > cursor.relid ||
				(columns[c].relid == cursor.relid && columns[c].attnum >= cursor.attnum))
				break;
		if (c < ncolumns && (columns[c].relid != cursor.relid || columns[c].attnum != cursor.attnum))
			ItemPointerSet(&cursor.after, 0, 0);

		if (c < ncolumns)
		{
			ItemPointerData position = cursor.after;
			uint64		nrows = 0;
			bool		busy = false;
			int			next = c + 1;

			/* before any work: an error from here on is this column's */
			state->relid = columns[c].relid;
			state->attnum = columns[c].attnum;
			if (backing_off(state, backing_off_relids, columns[c].relid))
				next = next_table(columns, ncolumns, c);	/* tried again once its wait is over */
			/* materialized views are counted, not rewritten: REFRESH renews them */
			else if (columns[c].relkind == RELKIND_RELATION &&
					 !batch_on_table(state, &columns[c], &position, keys, nkeys, &busy, &nrows))
				next = next_table(columns, ncolumns, c);	/* the rest of the table waits too */
			else
			{
				record_batch(&columns[c], keys, nkeys);
				/* the pass goes on; its count at the end finds what was left */
				if (busy)
				{
					note_on_keys(columns[c].relid, columns[c].attnum, keys, nkeys,
								 "the table was locked by another transaction: retried at the next pass");
					if (!state->in_worker)
						ereport(WARNING,
								(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
								 errmsg("could not re-encrypt table \"%s\": another session kept it locked past lock_timeout",
										get_rel_name(columns[c].relid) ? get_rel_name(columns[c].relid) : "?"),
								 errhint("Its values stay under their key until a later pass.")));
				}
				else if (list_member_oid(failing_relids, columns[c].relid))
					pcar_failure_forget(columns[c].relid);
				for (int k = 0; k < nkeys; k++)
					result->reencrypted += keys[k].reencrypted;
				/* more on this column: resume after the last row seen */
				if (nrows >= (uint64) pcar_rotation_batch_size)
					next = c;
			}

			if (next == c)
			{
				cursor.relid = columns[c].relid;
				cursor.attnum = columns[c].attnum;
				cursor.after = position;
			}
			else if (next < ncolumns)
			{
				cursor.relid = columns[next].relid;
				cursor.attnum = columns[next].attnum;
				ItemPointerSet(&cursor.after, 0, 0);
			}
			c = next;
		}

		if (c >= ncolumns)
		{
			/* the pass is over: count again with a fresh snapshot */
			CommandCounterIncrement();
			record_counts(columns, ncolumns, keys, nkeys, true, wait, &result->drained_keys);
			cursor.exists = false;
			pcar_pass_write(&cursor, false);
			state->last_priority = cursor.priority;
			state->last_priority_valid = true;
			result->lower_priorities_left = lower_priorities_wait(found, nfound, exclude_keys,
																  cursor.priority);
		}
		else
		{
			pcar_pass_write(&cursor, false);
			result->pass_running = true;
		}
	}
	PG_FINALLY();
	{
		pcar_secure_free(key_buffer);
	}
	PG_END_TRY();
	state->relid = InvalidOid;
	state->attnum = 0;
}

void
pcar_drain_note_error(PcarDrainState *state, const char *message)
{
	int			nkeys;
	PcarKeyName *keys = pcar_store_keys_to_drain(&nkeys);
	int32	   *key_ids = palloc(sizeof(int32) * Max(nkeys, 1));
	PcarPassCursor cursor;

	/* on every key still being drained; outside any column, on a row without a table */
	for (int k = 0; k < nkeys; k++)
		key_ids[k] = keys[k].key_id;
	pcar_progress_note(state->relid, state->attnum, nkeys, key_ids, message);

	/* skip past the column for this pass; the next pass tries it again */
	pcar_pass_read(&cursor);
	if (cursor.exists && OidIsValid(state->relid))
	{
		cursor.relid = state->relid;
		cursor.attnum = state->attnum + 1;
		ItemPointerSet(&cursor.after, 0, 0);
		pcar_pass_write(&cursor, false);
	}
	state->relid = InvalidOid;
	state->attnum = 0;
}
