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
 * Skipping the table's own internal triggers is sound as long as none of
 * them has anything to check.  The column replaced holds ciphertext, which
 * has no equality operator, so it is in no key; but a stored generated
 * column computed from it changes with it, and one in a foreign key (either
 * side) makes the table refused.  A deferred unique or exclusion constraint
 * (over a generated column, or an expression over the ciphertext) that
 * finds a possible conflict would need its recheck trigger: that row fails.
 * A generated column in a unique index is checked by the index insertion,
 * and its row is locked as an UPDATE of a key would be, so that no
 * foreign-key check holding the row makes us wait.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "row_rewrite.h"

struct PcarRowRewrite
{
	Relation	rel;
	AttrNumber	attnum;
	EState	   *estate;
	ResultRelInfo *result_rel;
	TupleTableSlot *locked;		/* the latest version of the row locked */
	TupleTableSlot *updated;	/* its replacement */
	LockTupleMode lock_mode;
};

#define COLUMN_BIT(attnum)	((attnum) - FirstLowInvalidHeapAttributeNumber)

/* The column replaced and the stored generated columns computed from it. */
static Bitmapset *
changed_columns(Relation rel, AttrNumber attnum)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Bitmapset  *changed = bms_make_singleton(COLUMN_BIT(attnum));

	if (!(desc->constr && desc->constr->has_generated_stored))
		return changed;
	for (int i = 0; i < desc->natts; i++)
	{
		Bitmapset  *used = NULL;

		if (TupleDescAttr(desc, i)->attgenerated != ATTRIBUTE_GENERATED_STORED)
			continue;
		pull_varattnos(build_column_default(rel, i + 1), 1, &used);
		if (bms_is_member(COLUMN_BIT(attnum), used))
			changed = bms_add_member(changed, COLUMN_BIT(i + 1));
	}
	return changed;
}

/* A changed column in a foreign key, on either side, or 0. */
static AttrNumber
column_in_foreign_key(Relation rel, Bitmapset *changed)
{
	ListCell   *cell;
	Relation	constraints;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	AttrNumber	found = 0;

	/* as the referencing table */
	foreach(cell, RelationGetFKeyList(rel))
	{
		ForeignKeyCacheInfo *fk = lfirst_node(ForeignKeyCacheInfo, cell);

		for (int k = 0; k < fk->nkeys; k++)
			if (bms_is_member(COLUMN_BIT(fk->conkey[k]), changed))
				return fk->conkey[k];
	}

	/* as the referenced table: no catalog index finds these, so scan */
	constraints = table_open(ConstraintRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_constraint_confrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(RelationGetRelid(rel)));
	scan = systable_beginscan(constraints, InvalidOid, false, NULL, 1, &key);
	while (found == 0 && HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Datum		confkey;
		bool		isnull;
		Datum	   *attnums;
		int			nattnums;

		if (((Form_pg_constraint) GETSTRUCT(tuple))->contype != CONSTRAINT_FOREIGN)
			continue;
		confkey = heap_getattr(tuple, Anum_pg_constraint_confkey, RelationGetDescr(constraints), &isnull);
		if (isnull)
			continue;
		deconstruct_array(DatumGetArrayTypeP(confkey), INT2OID, sizeof(int16), true, TYPALIGN_SHORT,
						  &attnums, NULL, &nattnums);
		for (int k = 0; k < nattnums && found == 0; k++)
			if (bms_is_member(COLUMN_BIT(DatumGetInt16(attnums[k])), changed))
				found = DatumGetInt16(attnums[k]);
	}
	systable_endscan(scan);
	table_close(constraints, AccessShareLock);
	return found;
}

PcarRowRewrite *
pcar_row_rewrite_begin(Relation rel, AttrNumber attnum)
{
	PcarRowRewrite *rewrite = palloc0(sizeof(PcarRowRewrite));
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	Bitmapset  *changed = changed_columns(rel, attnum);
	AttrNumber	in_foreign_key;

	/* an UPDATE would be refused where it could not be replicated */
	CheckCmdReplicaIdentity(rel, CMD_UPDATE);
	if (bms_num_members(changed) > 1 &&
		(in_foreign_key = column_in_foreign_key(rel, changed)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("column \"%s\" is computed from encrypted values and is part of a foreign key",
						get_attname(RelationGetRelid(rel), in_foreign_key, false)),
				 errdetail("Re-encrypting changes it, and foreign keys are checked by triggers, which do not fire during re-encryption."),
				 errhint("Re-encrypt the table with an UPDATE of your own, or drop the foreign key while the keys drain.")));
	rewrite->lock_mode = bms_overlap(changed, RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_KEY)) ?
		LockTupleExclusive : LockTupleNoKeyExclusive;

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
	 * The lock an UPDATE of the same columns would take, with SKIP LOCKED
	 * semantics, so no application ever waits for us.  A snapshot-isolated
	 * caller cannot follow a newer version: it skips the row, and a later
	 * pass finds it.
	 */
	result = table_tuple_lock(rewrite->rel, tid, snapshot, rewrite->locked,
							  rewrite->estate->es_output_cid, rewrite->lock_mode,
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
	/*
	 * A deferred unique or exclusion constraint that finds a possible
	 * conflict asks for a recheck at commit, which is a trigger: none fires
	 * here, so the row is not written.
	 */
	if (update_indexes && rewrite->result_rel->ri_NumIndices > 0 &&
		ExecInsertIndexTuples(rewrite->result_rel, updated, estate, true, false, NULL, NIL) != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("re-encrypting a row needs a deferred constraint check"),
				 errdetail("A deferred unique or exclusion constraint found a possible conflict; it is checked by a trigger, which does not fire during re-encryption."),
				 errhint("Re-encrypt the table with an UPDATE of your own, or make the constraint immediate while the keys drain.")));
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
