/*
 * row_rewrite.c
 *		The rotation worker is not the application: re-encrypting a value
 *		must not fire the table's triggers (updated_at, audit) or rules.
 *		Replica mode would silence them, but it also silences foreign keys
 *		and triggers elsewhere that the owner's index expressions or domain
 *		checks might reach, and no table owner may run code in it.  So rows
 *		are updated below the executor's trigger and rule layers, as logical
 *		replication applies a change: lock the row, build the new version,
 *		compute generated columns, check constraints and the partition bound,
 *		update the heap, insert index entries.
 *
 * Skipping the table's own internal triggers is sound: the column replaced
 * holds ciphertext, which has no equality operator, so it is in no key,
 * unique constraint or foreign key, and no key column changes.
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "utils/rel.h"

#include "row_rewrite.h"

struct PcarRowRewrite
{
	Relation	rel;
	AttrNumber	attnum;
	EState	   *estate;
	ResultRelInfo *result_rel;
	TupleTableSlot *locked;		/* the latest version of the row locked */
	TupleTableSlot *updated;	/* its replacement */
};

PcarRowRewrite *
pcar_row_rewrite_begin(Relation rel, AttrNumber attnum)
{
	PcarRowRewrite *rewrite = palloc0(sizeof(PcarRowRewrite));
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	/* an UPDATE would be refused where it could not be replicated */
	CheckCmdReplicaIdentity(rel, CMD_UPDATE);

	rewrite->rel = rel;
	rewrite->attnum = attnum;
	rewrite->estate = CreateExecutorState();

	/*
	 * The column set: only generated columns that depend on it are computed
	 * (all of them, as PostgreSQL decides, if the table has BEFORE UPDATE
	 * triggers, although none fires here).
	 */
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	rte->updatedCols = bms_make_singleton(attnum - FirstLowInvalidHeapAttributeNumber);
	ExecInitRangeTable(rewrite->estate, list_make1(rte));

	rewrite->result_rel = makeNode(ResultRelInfo);
	InitResultRelInfo(rewrite->result_rel, rel, 1, NULL, 0);
	rewrite->result_rel->ri_TrigDesc = NULL;	/* no trigger fires */
	rewrite->estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(rewrite->result_rel, false);

	rewrite->locked = table_slot_create(rel, NULL);
	rewrite->updated = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsVirtual);
	return rewrite;
}

TupleTableSlot *
pcar_row_rewrite_lock(PcarRowRewrite *rewrite, ItemPointer tid, Snapshot snapshot)
{
	TM_FailureData failure;
	TM_Result	result;

	/*
	 * No key column changes, so the weaker lock an UPDATE of non-key columns
	 * takes; SKIP LOCKED semantics, so no application ever waits for us.  A
	 * snapshot-isolated caller cannot follow a newer version: it skips the
	 * row, and a later pass finds it.
	 */
	result = table_tuple_lock(rewrite->rel, tid, snapshot, rewrite->locked,
							  rewrite->estate->es_output_cid, LockTupleNoKeyExclusive,
							  LockWaitSkip,
							  IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
							  &failure);
	return result == TM_Ok ? rewrite->locked : NULL;
}

void
pcar_row_rewrite_update(PcarRowRewrite *rewrite, Datum value)
{
	Relation	rel = rewrite->rel;
	EState	   *estate = rewrite->estate;
	TupleTableSlot *updated = rewrite->updated;
	int			natts = RelationGetDescr(rel)->natts;
	bool		update_indexes;

	ResetPerTupleExprContext(estate);
	slot_getallattrs(rewrite->locked);
	ExecClearTuple(updated);
	memcpy(updated->tts_values, rewrite->locked->tts_values, sizeof(Datum) * natts);
	memcpy(updated->tts_isnull, rewrite->locked->tts_isnull, sizeof(bool) * natts);
	updated->tts_values[rewrite->attnum - 1] = value;
	updated->tts_isnull[rewrite->attnum - 1] = false;
	ExecStoreVirtualTuple(updated);

	if (rel->rd_att->constr && rel->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(rewrite->result_rel, estate, updated, CMD_UPDATE);
	if (rel->rd_att->constr)
		ExecConstraints(rewrite->result_rel, updated, estate);
	if (rel->rd_rel->relispartition)
		(void) ExecPartitionCheck(rewrite->result_rel, updated, estate, true);

	simple_table_tuple_update(rel, &rewrite->locked->tts_tid, updated, estate->es_snapshot,
							  &update_indexes);
	if (update_indexes && rewrite->result_rel->ri_NumIndices > 0)
		list_free(ExecInsertIndexTuples(rewrite->result_rel, updated, estate,
										true, false, NULL, NIL));
	ExecClearTuple(rewrite->locked);
}

void
pcar_row_rewrite_end(PcarRowRewrite *rewrite)
{
	ExecCloseIndices(rewrite->result_rel);
	ExecDropSingleTupleTableSlot(rewrite->locked);
	ExecDropSingleTupleTableSlot(rewrite->updated);
	FreeExecutorState(rewrite->estate);
	pfree(rewrite);
}
