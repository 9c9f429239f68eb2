/*
 * value_census.c
 *		Counting encrypted values per key in a table by reading its heap
 *		directly.  No SQL is planned or run and none of the table owner's
 *		code runs: no index, statistics, policy or domain is consulted, so a
 *		count is safe to take as a superuser, and row-level security hides
 *		nothing from it.
 *
 * Two modes.  PCAR_CENSUS_VISIBLE counts what a fresh MVCC snapshot sees:
 * the values left to re-encrypt, shown in rotation_status.
 * PCAR_CENSUS_NOT_DEAD counts every row version that is not dead to every
 * snapshot: live rows, rows being written or deleted by transactions in
 * progress, and rows a still-running snapshot can see although they were
 * deleted or updated since.  Such a version can still be read, and copied,
 * so its key must stay; this is the count that decides destruction.
 * Scanning every version also catches a row that an UPDATE moves behind
 * the scan while it runs: its old version is still there, not yet dead to
 * this transaction's own snapshot.
 *
 * pcar_census_rows() reads a table the same way for rows_under_key(): the
 * rows of one key, located by tid, in the caller's snapshot.  It tells
 * where values are and how many, never what they hold.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "encrypted_values.h"
#include "value_census.h"

typedef struct CensusCell
{
	const int32 *key_ids;
	int			nkeys;
	int64	   *counts;			/* nkeys counts of one column */
} CensusCell;

static void
count_key_id(int32 key_id, void *arg)
{
	CensusCell *cell = arg;

	for (int k = 0; k < cell->nkeys; k++)
		if (cell->key_ids[k] == key_id)
			cell->counts[k]++;
}

bool
pcar_lock_table(Oid relid, LOCKMODE mode, bool wait)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool locked = true;

	if (ConditionalLockRelationOid(relid, mode))
		return true;
	if (!wait)
		return false;

	/* a lock granted in a subtransaction that commits stays the transaction's */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		LockRelationOid(relid, mode);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		if (error->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		FreeErrorData(error);
		locked = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(context);
	CurrentResourceOwner = owner;
	return locked;
}

/* Opens the table with AccessShareLock, or says why it cannot be counted. */
static Relation
open_for_census(Oid relid, bool wait, PcarCensusResult *result)
{
	Relation	rel;

	if (!pcar_lock_table(relid, AccessShareLock, wait))
	{
		*result = PCAR_CENSUS_BUSY;
		return NULL;
	}
	rel = try_table_open(relid, NoLock);
	if (rel == NULL)
	{
		UnlockRelationOid(relid, AccessShareLock);
		*result = PCAR_CENSUS_GONE;
		return NULL;
	}
	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID)
	{
		table_close(rel, AccessShareLock);
		*result = PCAR_CENSUS_UNSUPPORTED;
		return NULL;
	}
	return rel;
}

PcarCensusResult
pcar_census_table(const PcarColumn *columns, int ncolumns, const int32 *key_ids, int nkeys,
				  int64 *counts, PcarCensusMode mode, bool wait)
{
	PcarCensusResult result = PCAR_CENSUS_COUNTED;
	Relation	rel = open_for_census(columns[0].relid, wait, &result);
	MemoryContext per_tuple;
	MemoryContext caller = CurrentMemoryContext;
	PcarValueWalk *walk;
	Snapshot	snapshot;
	TransactionId oldest_xmin = InvalidTransactionId;
	TableScanDesc scan;
	HeapTuple	tuple;
	CensusCell *cells;

	if (rel == NULL)
		return result;

	walk = pcar_value_walk_create();
	cells = palloc(sizeof(CensusCell) * ncolumns);
	for (int c = 0; c < ncolumns; c++)
	{
		cells[c].key_ids = key_ids;
		cells[c].nkeys = nkeys;
		cells[c].counts = counts + c * nkeys;
	}
	per_tuple = AllocSetContextCreate(CurrentMemoryContext, "pgcrypt_at_rest census",
									  ALLOCSET_DEFAULT_SIZES);

	if (mode == PCAR_CENSUS_VISIBLE)
		snapshot = RegisterSnapshot(GetLatestSnapshot());
	else
	{
		/* our own registered snapshot holds back what may count as dead */
		snapshot = SnapshotAny;
		oldest_xmin = GetOldestNonRemovableTransactionId(rel);
	}

	scan = table_beginscan(rel, snapshot, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		CHECK_FOR_INTERRUPTS();
		if (mode == PCAR_CENSUS_NOT_DEAD)
		{
			Buffer		buffer = ((HeapScanDesc) scan)->rs_cbuf;
			HTSV_Result state;

			LockBuffer(buffer, BUFFER_LOCK_SHARE);
			state = HeapTupleSatisfiesVacuum(tuple, oldest_xmin, buffer);
			LockBuffer(buffer, BUFFER_LOCK_UNLOCK);
			if (state == HEAPTUPLE_DEAD)
				continue;
		}

		MemoryContextSwitchTo(per_tuple);
		for (int c = 0; c < ncolumns; c++)
		{
			bool		isnull;
			Datum		value;

			/* dropped since the catalogs were read */
			if (columns[c].attnum > RelationGetDescr(rel)->natts ||
				TupleDescAttr(RelationGetDescr(rel), columns[c].attnum - 1)->attisdropped)
				continue;
			value = heap_getattr(tuple, columns[c].attnum, RelationGetDescr(rel), &isnull);
			if (!isnull)
				pcar_visit_key_ids(walk, value,
								   TupleDescAttr(RelationGetDescr(rel), columns[c].attnum - 1)->atttypid,
								   count_key_id, &cells[c]);
		}
		MemoryContextSwitchTo(caller);
		MemoryContextReset(per_tuple);
	}
	table_endscan(scan);
	if (mode == PCAR_CENSUS_VISIBLE)
		UnregisterSnapshot(snapshot);
	/* held to the end of the transaction: see pcar_census_table() */
	table_close(rel, NoLock);
	MemoryContextDelete(per_tuple);
	return result;
}

PcarCensusResult
pcar_census_rows(const PcarColumn *columns, int ncolumns, int32 key_id, Snapshot snapshot,
				 PcarRowVisitor visit, void *arg)
{
	PcarCensusResult result = PCAR_CENSUS_COUNTED;
	Relation	rel = open_for_census(columns[0].relid, true, &result);
	MemoryContext per_tuple;
	MemoryContext caller = CurrentMemoryContext;
	PcarValueWalk *walk;
	TableScanDesc scan;
	HeapTuple	tuple;
	int64	   *counts;
	CensusCell *cells;

	if (rel == NULL)
		return result;

	walk = pcar_value_walk_create();
	counts = palloc(sizeof(int64) * ncolumns);
	cells = palloc(sizeof(CensusCell) * ncolumns);
	for (int c = 0; c < ncolumns; c++)
	{
		cells[c].key_ids = &key_id;
		cells[c].nkeys = 1;
		cells[c].counts = &counts[c];
	}
	per_tuple = AllocSetContextCreate(CurrentMemoryContext, "pgcrypt_at_rest rows under a key",
									  ALLOCSET_DEFAULT_SIZES);

	snapshot = RegisterSnapshot(snapshot);
	scan = table_beginscan(rel, snapshot, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(per_tuple);
		for (int c = 0; c < ncolumns; c++)
		{
			TupleDesc	desc = RelationGetDescr(rel);
			bool		isnull;
			Datum		value;

			counts[c] = 0;
			/* dropped since the catalogs were read */
			if (columns[c].attnum > desc->natts ||
				TupleDescAttr(desc, columns[c].attnum - 1)->attisdropped)
				continue;
			value = heap_getattr(tuple, columns[c].attnum, desc, &isnull);
			if (!isnull)
				pcar_visit_key_ids(walk, value, TupleDescAttr(desc, columns[c].attnum - 1)->atttypid,
								   count_key_id, &cells[c]);
		}
		/* the visitor's results outlive this row */
		MemoryContextSwitchTo(caller);
		for (int c = 0; c < ncolumns; c++)
			if (counts[c] > 0)
				visit(&columns[c], &tuple->t_self, (int32) counts[c], arg);
		MemoryContextReset(per_tuple);
	}
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	/* held to the end of the transaction, as a SELECT holds it */
	table_close(rel, NoLock);
	MemoryContextDelete(per_tuple);
	return result;
}
