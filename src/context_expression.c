/*
 * context_expression.c
 *		A value encrypted with a context can be re-encrypted only if the
 *		worker knows the context, so a table's owner may declare it per
 *		column as an expression over the row (column_context, owned by this
 *		module).
 *
 * The expression is the owner's code: it is analysed and evaluated as the
 * owner, in the security-restricted context the caller set up, and only
 * while the table still has the owner it was declared for (recorded as a
 * regrole: checked by OID, dumped by name).  It is never spliced into SQL
 * text: it is parsed on its own, analysed against the table's row type and
 * evaluated on each locked row, so no text can add clauses or statements.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "rewrite/rewriteManip.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "context_expression.h"
#include "pgcrypt_at_rest.h"
#include "restricted.h"
#include "spi_session.h"

struct PcarContextExpression
{
	EState	   *estate;
	ExprState  *state;
};

static void
refuse(const char *detail) pg_attribute_noreturn();

static void
refuse(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("context_expression must be a single SQL expression"),
			 detail ? errdetail("%s", detail) : 0,
			 errhint("For example 'pg_catalog.int8send(id)'.")));
}

/* The raw tree of "SELECT (expression)", refusing anything but one expression. */
static Node *
parse_one_expression(const char *expression)
{
	MemoryContext context = CurrentMemoryContext;
	List	   *volatile parsed = NIL;
	char	   *volatile problem = NULL;
	SelectStmt *select;
	ResTarget  *target;

	if (strstr(expression, "--") != NULL || strstr(expression, "/*") != NULL)
		refuse("Comments are not allowed.");
	/* parsing only allocates memory: its error can be caught here */
	PG_TRY();
	{
		parsed = raw_parser(psprintf("SELECT (%s)", expression), RAW_PARSE_DEFAULT);
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		problem = psprintf("%s.", error->message);
	}
	PG_END_TRY();
	if (problem != NULL)
		refuse(problem);

	select = list_length(parsed) == 1 ?
		(SelectStmt *) ((RawStmt *) linitial(parsed))->stmt : NULL;
	if (select == NULL || !IsA(select, SelectStmt) || list_length(select->targetList) != 1 ||
		select->fromClause != NIL || select->whereClause != NULL ||
		select->groupClause != NIL || select->havingClause != NULL ||
		select->windowClause != NIL || select->distinctClause != NIL ||
		select->sortClause != NIL || select->limitCount != NULL ||
		select->limitOffset != NULL || select->lockingClause != NIL ||
		select->withClause != NULL || select->intoClause != NULL ||
		select->valuesLists != NIL || select->op != SETOP_NONE)
		refuse(NULL);
	target = linitial_node(ResTarget, select->targetList);
	return target->val;
}

PcarContextExpression *
pcar_context_compile(Relation rel, const char *expression)
{
	Node	   *raw = parse_one_expression(expression);
	ParseState *pstate = make_parsestate(NULL);
	ParseNamespaceItem *nsitem;
	Node	   *node;
	Oid			type;
	PcarContextExpression *context;

	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock, NULL, false, false);
	addNSItemToQuery(pstate, nsitem, false, true, true);
	node = transformExpr(pstate, raw, EXPR_KIND_OTHER);
	if (checkExprHasSubLink(node))
		refuse("Subqueries are not allowed.");
	if (contain_agg_clause(node) || contain_windowfuncs(node))
		refuse("Aggregate and window functions are not allowed.");
	if (expression_returns_set(node))
		refuse("Set-returning functions are not allowed.");
	type = exprType(node);
	node = coerce_to_target_type(pstate, node, type, BYTEAOID, -1,
								 COERCION_EXPLICIT, COERCE_EXPLICIT_CAST, -1);
	if (node == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("context_expression gives type %s, which cannot be cast to bytea",
						format_type_be(type)),
				 errhint("Use a function that returns bytea, for example pg_catalog.int8send(id).")));
	assign_expr_collations(pstate, node);
	free_parsestate(pstate);

	context = palloc(sizeof(PcarContextExpression));
	context->estate = CreateExecutorState();
	context->state = ExecPrepareExpr(expression_planner((Expr *) node), context->estate);
	return context;
}

bytea *
pcar_context_evaluate(PcarContextExpression *context, TupleTableSlot *slot)
{
	ExprContext *econtext = GetPerTupleExprContext(context->estate);
	bool		isnull;
	Datum		result;

	ResetExprContext(econtext);
	econtext->ecxt_scantuple = slot;
	result = ExecEvalExprSwitchContext(context->state, econtext, &isnull);
	return isnull ? NULL : DatumGetByteaPP(result);
}

/* "schema", "table" and "column" of a column, or false if it is gone. */
static bool
column_names(Oid relid, AttrNumber attnum, Datum *names)
{
	char	   *table = get_rel_name(relid);
	char	   *schema = get_namespace_name(get_rel_namespace(relid));
	char	   *column = get_attname(relid, attnum, true);

	if (table == NULL || schema == NULL || column == NULL)
		return false;
	names[0] = CStringGetTextDatum(schema);
	names[1] = CStringGetTextDatum(table);
	names[2] = CStringGetTextDatum(column);
	return true;
}

char *
pcar_context_lookup(Oid relid, AttrNumber attnum, bool *stale)
{
	PcarSpiSession session;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	char	   *expression = NULL;
	Oid			owner;

	*stale = false;
	if (!column_names(relid, attnum, values))
		return NULL;
	owner = pcar_relation_owner(relid);

	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT context_expression, table_owner::pg_catalog.oid"
					 "  FROM " PCAR_SCHEMA ".column_context"
					 " WHERE table_schema" PCAR_EQ "$1 AND table_name" PCAR_EQ "$2 AND column_name" PCAR_EQ "$3",
					 SPI_OK_SELECT, 3, types, values);
	if (SPI_processed > 0)
	{
		bool		isnull;
		Oid			declared_for = DatumGetObjectId(pcar_spi_datum(0, 2, &isnull));

		if (declared_for == owner)
			expression = MemoryContextStrdup(session.caller_context,
											 pcar_spi_text(0, 1));
		else
			*stale = true;
	}
	pcar_spi_end(&session);
	return expression;
}

void
pcar_context_store(Oid relid, AttrNumber attnum, const char *expression, Oid owner)
{
	PcarSpiSession session;
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, REGROLEOID};
	Datum		values[5];

	if (!column_names(relid, attnum, values))
		elog(ERROR, "column %d of relation %u does not exist", attnum, relid);
	values[3] = expression ? CStringGetTextDatum(expression) : (Datum) 0;
	values[4] = ObjectIdGetDatum(owner);

	pcar_spi_begin(&session);
	if (expression == NULL)
		pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".column_context"
						 " WHERE table_schema" PCAR_EQ "$1 AND table_name" PCAR_EQ "$2 AND column_name" PCAR_EQ "$3",
						 SPI_OK_DELETE, 3, types, values);
	else
		pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".column_context"
						 " (table_schema, table_name, column_name, context_expression, table_owner)"
						 " VALUES ($1, $2, $3, $4, $5)"
						 " ON CONFLICT (table_schema, table_name, column_name)"
						 " DO UPDATE SET context_expression = EXCLUDED.context_expression,"
						 "   table_owner = EXCLUDED.table_owner",
						 SPI_OK_INSERT, 5, types, values);
	pcar_spi_end(&session);
}
