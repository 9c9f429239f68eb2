/*
 * context_expression.h
 *		Where a column's context comes from: an SQL expression over its row,
 *		declared by the table's owner, evaluated by the rotation worker as
 *		that owner.  Declaring, checking, storing, looking up and evaluating
 *		one all live here.
 */
#ifndef PCAR_CONTEXT_EXPRESSION_H
#define PCAR_CONTEXT_EXPRESSION_H

#include "access/attnum.h"
#include "executor/tuptable.h"
#include "utils/relcache.h"

typedef struct PcarContextExpression PcarContextExpression;

/*
 * Parses and analyses expression over rows of rel, as the current user
 * (call it as the table's owner): a single expression, without subqueries,
 * aggregates, window functions or set-returning functions, that can be
 * cast to bytea.  Errors (22023, or the analysis error) otherwise.
 */
extern PcarContextExpression *pcar_context_compile(Relation rel, const char *expression);

/* The context of the row in slot (a row of that rel); NULL when it is null. */
extern bytea *pcar_context_evaluate(PcarContextExpression *context, TupleTableSlot *slot);

/*
 * The expression declared for a column, or NULL.  A declaration made while
 * the table had another owner is not returned (*stale is set): it would
 * run with the rights of whoever owns the table now.
 */
extern char *pcar_context_lookup(Oid relid, AttrNumber attnum, bool *stale);

/* Records (or, with a NULL expression, forgets) a column's declaration. */
extern void pcar_context_store(Oid relid, AttrNumber attnum, const char *expression, Oid owner);

#endif							/* PCAR_CONTEXT_EXPRESSION_H */
