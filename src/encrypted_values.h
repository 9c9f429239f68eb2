/*
 * encrypted_values.h
 *		Finding every encrypted value inside a column's value: directly, or
 *		nested in domains, arrays and composite types at any depth.
 */
#ifndef PCAR_ENCRYPTED_VALUES_H
#define PCAR_ENCRYPTED_VALUES_H

#include "encrypted_type.h"

typedef enum PcarHolding
{
	PCAR_HOLDS_NOTHING,			/* no encrypted value can be in it */
	PCAR_HOLDS_VALUES,			/* values the walk below reaches */
	PCAR_HOLDS_OPAQUE			/* values inside a range: not opened */
} PcarHolding;

/* Per-use state: remembers type lookups; lives in the caller's context. */
typedef struct PcarValueWalk PcarValueWalk;

extern PcarValueWalk *pcar_value_walk_create(void);

/* Whether values of this type can hold encrypted values, and how. */
extern PcarHolding pcar_type_holding(PcarValueWalk *walk, Oid typid);

/* Calls visit with the key id of every encrypted value in value. */
typedef void (*PcarKeyIdVisitor) (int32 key_id, void *arg);
extern void pcar_visit_key_ids(PcarValueWalk *walk, Datum value, Oid typid,
							   PcarKeyIdVisitor visit, void *arg);

/*
 * Rebuilds value with every encrypted value for which replace returns a new
 * one replaced; *replaced says whether any was.  A rebuilt domain value is
 * checked against its domain's constraints, which run as the current user.
 */
typedef Encrypted *(*PcarValueReplacer) (Encrypted *value, void *arg);
extern Datum pcar_replace_values(PcarValueWalk *walk, Datum value, Oid typid,
								 PcarValueReplacer replace, void *arg, bool *replaced);

#endif							/* PCAR_ENCRYPTED_VALUES_H */
