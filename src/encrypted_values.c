/*
 * encrypted_values.c
 *		Where encrypted values hide in a column: directly, or inside domains,
 *		arrays and composite types, nested to any depth.  The rotation worker
 *		re-encrypts them all and every count of a key's values counts them
 *		all, through this one walk, so a value in an encrypted[] column or a
 *		composite field is never left under a destroyed key.
 *
 * Ranges and multiranges over encrypted need an operator class, which only
 * a superuser can create.  The walk does not open them: a column that can
 * hold one is reported PCAR_HOLDS_OPAQUE, and its values keep every key.
 *
 * Nothing here runs SQL.  The only user code that runs is a domain's
 * constraints, when a value of that domain is rebuilt; the caller runs the
 * walk as the table's owner.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "ciphertext.h"
#include "encrypted_values.h"

typedef enum TypeShape
{
	SHAPE_OTHER,
	SHAPE_ENCRYPTED,
	SHAPE_DOMAIN,
	SHAPE_ARRAY,
	SHAPE_COMPOSITE
} TypeShape;

typedef struct TypeEntry
{
	Oid			typid;			/* hash key */
	PcarHolding holding;
	TypeShape	shape;
	Oid			base_type;		/* of a domain, under every domain level */
	int16		typlen;			/* as an array element */
	bool		typbyval;
	char		typalign;
	void	   *domain_check_cache;
} TypeEntry;

struct PcarValueWalk
{
	Oid			encrypted_oid;
	HTAB	   *types;
	MemoryContext context;
};

PcarValueWalk *
pcar_value_walk_create(void)
{
	PcarValueWalk *walk = palloc(sizeof(PcarValueWalk));
	HASHCTL		ctl;

	walk->encrypted_oid = pcar_encrypted_type_oid();
	walk->context = CurrentMemoryContext;
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(TypeEntry);
	ctl.hcxt = CurrentMemoryContext;
	walk->types = hash_create("pgcrypt_at_rest value walk", 32, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return walk;
}

static TypeEntry *type_entry(PcarValueWalk *walk, Oid typid);

/* The most revealing holding among a composite type's attributes. */
static PcarHolding
composite_holding(PcarValueWalk *walk, Oid relid)
{
	HeapTuple	class_tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	int			natts;
	PcarHolding holding = PCAR_HOLDS_NOTHING;

	if (!HeapTupleIsValid(class_tuple))
		return PCAR_HOLDS_NOTHING;
	natts = ((Form_pg_class) GETSTRUCT(class_tuple))->relnatts;
	ReleaseSysCache(class_tuple);

	for (AttrNumber attnum = 1; attnum <= natts; attnum++)
	{
		HeapTuple	att_tuple = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid),
												Int16GetDatum(attnum));
		Form_pg_attribute att;

		if (!HeapTupleIsValid(att_tuple))
			continue;
		att = (Form_pg_attribute) GETSTRUCT(att_tuple);
		if (!att->attisdropped)
			holding = Max(holding, type_entry(walk, att->atttypid)->holding);
		ReleaseSysCache(att_tuple);
	}
	return holding;
}

/*
 * Looks a type up once per walk.  Entries never move in a dynahash table,
 * so a pointer stays valid while the recursion adds others.
 */
static TypeEntry *
type_entry(PcarValueWalk *walk, Oid typid)
{
	TypeEntry  *entry;
	HeapTuple	tuple;
	Form_pg_type form;
	bool		found;

	entry = hash_search(walk->types, &typid, HASH_ENTER, &found);
	if (found)
		return entry;
	entry->holding = PCAR_HOLDS_NOTHING;
	entry->shape = SHAPE_OTHER;
	entry->domain_check_cache = NULL;

	check_stack_depth();
	/* built-in types hold no value of an extension's type */
	if (typid < FirstNormalObjectId && typid != walk->encrypted_oid)
		return entry;
	tuple = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tuple))
		return entry;			/* dropped since the catalog was read */
	form = (Form_pg_type) GETSTRUCT(tuple);
	entry->typlen = form->typlen;
	entry->typbyval = form->typbyval;
	entry->typalign = form->typalign;

	if (typid == walk->encrypted_oid)
	{
		entry->shape = SHAPE_ENCRYPTED;
		entry->holding = PCAR_HOLDS_VALUES;
	}
	else if (form->typtype == TYPTYPE_DOMAIN)
	{
		/* straight to the bottom: one domain_check covers the whole chain */
		entry->shape = SHAPE_DOMAIN;
		entry->base_type = getBaseType(typid);
		entry->holding = type_entry(walk, entry->base_type)->holding;
	}
	else if (form->typtype == TYPTYPE_BASE && IsTrueArrayType(form))
	{
		entry->shape = SHAPE_ARRAY;
		entry->holding = type_entry(walk, form->typelem)->holding;
	}
	else if (form->typtype == TYPTYPE_COMPOSITE)
	{
		entry->shape = SHAPE_COMPOSITE;
		entry->holding = composite_holding(walk, form->typrelid);
	}
	else if (form->typtype == TYPTYPE_RANGE || form->typtype == TYPTYPE_MULTIRANGE)
	{
		Oid			inner = form->typtype == TYPTYPE_RANGE ?
			get_range_subtype(typid) : get_multirange_range(typid);

		if (OidIsValid(inner) && type_entry(walk, inner)->holding != PCAR_HOLDS_NOTHING)
			entry->holding = PCAR_HOLDS_OPAQUE;
	}
	ReleaseSysCache(tuple);
	return entry;
}

PcarHolding
pcar_type_holding(PcarValueWalk *walk, Oid typid)
{
	return type_entry(walk, typid)->holding;
}

/* A composite value's fields, deformed; the caller releases *desc. */
static void
deform_composite(Datum value, TupleDesc *desc, Datum **values, bool **nulls)
{
	HeapTupleHeader header = DatumGetHeapTupleHeader(value);
	HeapTupleData tuple;

	*desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(header),
								   HeapTupleHeaderGetTypMod(header));
	tuple.t_len = HeapTupleHeaderGetDatumLength(header);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = header;
	*values = palloc(sizeof(Datum) * Max((*desc)->natts, 1));
	*nulls = palloc(sizeof(bool) * Max((*desc)->natts, 1));
	heap_deform_tuple(&tuple, *desc, *values, *nulls);
}

/* An array value's elements, deformed; returns how many. */
static int
deform_array(PcarValueWalk *walk, Datum value, ArrayType **array, TypeEntry **element,
			 Datum **elements, bool **nulls)
{
	int			count;

	*array = DatumGetArrayTypeP(value);
	*element = type_entry(walk, ARR_ELEMTYPE(*array));
	deconstruct_array(*array, ARR_ELEMTYPE(*array), (*element)->typlen,
					  (*element)->typbyval, (*element)->typalign,
					  elements, nulls, &count);
	return count;
}

static void
visit(PcarValueWalk *walk, Datum value, TypeEntry *type, PcarKeyIdVisitor visitor, void *arg)
{
	if (type->holding != PCAR_HOLDS_VALUES)
		return;
	check_stack_depth();
	switch (type->shape)
	{
		case SHAPE_ENCRYPTED:
			{
				struct varlena *raw = (struct varlena *) DatumGetPointer(value);

				/* only the header is needed */
				if (VARATT_IS_EXTERNAL(raw) || VARATT_IS_COMPRESSED(raw))
					raw = pg_detoast_datum_slice(raw, 0, PCAR_HEADER_BYTES);
				if (VARSIZE_ANY_EXHDR(raw) >= PCAR_HEADER_BYTES)
					visitor((int32) pcar_ciphertext_key_id((const uint8 *) VARDATA_ANY(raw)), arg);
			}
			break;
		case SHAPE_DOMAIN:
			visit(walk, value, type_entry(walk, type->base_type), visitor, arg);
			break;
		case SHAPE_ARRAY:
			{
				ArrayType  *array;
				TypeEntry  *element;
				Datum	   *elements;
				bool	   *nulls;
				int			count = deform_array(walk, value, &array, &element, &elements, &nulls);

				for (int i = 0; i < count; i++)
					if (!nulls[i])
						visit(walk, elements[i], element, visitor, arg);
			}
			break;
		case SHAPE_COMPOSITE:
			{
				TupleDesc	desc;
				Datum	   *values;
				bool	   *nulls;

				deform_composite(value, &desc, &values, &nulls);
				for (int i = 0; i < desc->natts; i++)
				{
					Form_pg_attribute att = TupleDescAttr(desc, i);

					if (!att->attisdropped && !nulls[i])
						visit(walk, values[i], type_entry(walk, att->atttypid), visitor, arg);
				}
				ReleaseTupleDesc(desc);
			}
			break;
		case SHAPE_OTHER:
			break;
	}
}

void
pcar_visit_key_ids(PcarValueWalk *walk, Datum value, Oid typid,
				   PcarKeyIdVisitor visitor, void *arg)
{
	visit(walk, value, type_entry(walk, typid), visitor, arg);
}

static Datum
replace(PcarValueWalk *walk, Datum value, TypeEntry *type, PcarValueReplacer replacer,
		void *arg, bool *replaced)
{
	*replaced = false;
	if (type->holding != PCAR_HOLDS_VALUES)
		return value;
	check_stack_depth();
	switch (type->shape)
	{
		case SHAPE_ENCRYPTED:
			{
				Encrypted  *replacement = replacer((Encrypted *) PG_DETOAST_DATUM(value), arg);

				if (replacement == NULL)
					return value;
				*replaced = true;
				return PointerGetDatum(replacement);
			}
		case SHAPE_DOMAIN:
			{
				Datum		rebuilt = replace(walk, value, type_entry(walk, type->base_type),
											  replacer, arg, replaced);

				/* the constraints of this domain and of those it is over */
				if (*replaced)
					domain_check(rebuilt, false, type->typid, &type->domain_check_cache,
								 walk->context);
				return rebuilt;
			}
		case SHAPE_ARRAY:
			{
				ArrayType  *array;
				TypeEntry  *element;
				Datum	   *elements;
				bool	   *nulls;
				int			count = deform_array(walk, value, &array, &element, &elements, &nulls);

				for (int i = 0; i < count; i++)
				{
					bool		element_replaced;

					if (nulls[i])
						continue;
					elements[i] = replace(walk, elements[i], element, replacer, arg,
										  &element_replaced);
					*replaced |= element_replaced;
				}
				if (!*replaced)
					return value;
				return PointerGetDatum(construct_md_array(elements, nulls, ARR_NDIM(array),
														  ARR_DIMS(array), ARR_LBOUND(array),
														  ARR_ELEMTYPE(array), element->typlen,
														  element->typbyval, element->typalign));
			}
		case SHAPE_COMPOSITE:
			{
				TupleDesc	desc;
				Datum	   *values;
				bool	   *nulls;
				Datum		result = value;

				deform_composite(value, &desc, &values, &nulls);
				for (int i = 0; i < desc->natts; i++)
				{
					Form_pg_attribute att = TupleDescAttr(desc, i);
					bool		field_replaced;

					if (att->attisdropped || nulls[i])
						continue;
					values[i] = replace(walk, values[i], type_entry(walk, att->atttypid),
										replacer, arg, &field_replaced);
					*replaced |= field_replaced;
				}
				if (*replaced)
					result = HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
				ReleaseTupleDesc(desc);
				return result;
			}
		case SHAPE_OTHER:
			break;
	}
	return value;
}

Datum
pcar_replace_values(PcarValueWalk *walk, Datum value, Oid typid,
					PcarValueReplacer replacer, void *arg, bool *replaced)
{
	return replace(walk, value, type_entry(walk, typid), replacer, arg, replaced);
}
