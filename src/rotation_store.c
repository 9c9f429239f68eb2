/*
 * rotation_store.c
 *		See rotation_store.h.  Each function is one short SPI session as the
 *		owner of the extension's tables (spi_session.c).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "pgcrypt_at_rest.h"
#include "rotation_store.h"
#include "spi_session.h"

static Datum
int4_array(const int32 *values, int n)
{
	Datum	   *datums = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		datums[i] = Int32GetDatum(values[i]);
	return PointerGetDatum(construct_array(datums, n, INT4OID, 4, true, TYPALIGN_INT));
}

void
pcar_pass_read(PcarPassCursor *cursor)
{
	PcarSpiSession session;

	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT relid, attnum, resume_after, started_at, priority FROM " PCAR_SCHEMA ".rotation_pass",
					 SPI_OK_SELECT, 0, NULL, NULL);
	cursor->exists = SPI_processed > 0;
	if (cursor->exists)
	{
		bool		isnull;

		cursor->relid = DatumGetObjectId(pcar_spi_datum(0, 1, &isnull));
		cursor->attnum = DatumGetInt16(pcar_spi_datum(0, 2, &isnull));
		ItemPointerCopy((ItemPointer) DatumGetPointer(pcar_spi_datum(0, 3, &isnull)),
						&cursor->after);
		cursor->started_at = DatumGetTimestampTz(pcar_spi_datum(0, 4, &isnull));
		cursor->priority = DatumGetInt32(pcar_spi_datum(0, 5, &isnull));
	}
	pcar_spi_end(&session);
}

void
pcar_pass_write(const PcarPassCursor *cursor, bool new_pass)
{
	PcarSpiSession session;
	Oid			types[4] = {OIDOID, INT2OID, TIDOID, INT4OID};
	Datum		values[4] = {ObjectIdGetDatum(cursor->relid), Int16GetDatum(cursor->attnum),
	PointerGetDatum(&cursor->after), Int32GetDatum(cursor->priority)};

	pcar_spi_begin(&session);
	if (!cursor->exists)
		pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".rotation_pass", SPI_OK_DELETE, 0, NULL, NULL);
	else if (new_pass)
		pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".rotation_pass (relid, attnum, resume_after, priority)"
						 " VALUES ($1, $2, $3, $4)",
						 SPI_OK_INSERT, 4, types, values);
	else
		pcar_spi_execute("UPDATE " PCAR_SCHEMA ".rotation_pass"
						 " SET relid = $1, attnum = $2, resume_after = $3",
						 SPI_OK_UPDATE, 3, types, values);
	pcar_spi_end(&session);
}

void
pcar_progress_counted(Oid relid, AttrNumber attnum, int nkeys, const int32 *key_ids,
					  const int64 *counts, bool pass_end, const char *const *reasons)
{
	PcarSpiSession session;
	Oid			types[6] = {INT4OID, OIDOID, INT2OID, INT8OID, BOOLOID, TEXTOID};

	pcar_spi_begin(&session);
	for (int k = 0; k < nkeys; k++)
	{
		Datum		values[6];
		char		nulls[6] = "      ";
		const char *reason = reasons ? reasons[k] : NULL;

		values[0] = Int32GetDatum(key_ids[k]);
		values[1] = ObjectIdGetDatum(relid);
		values[2] = Int16GetDatum(attnum);
		values[3] = Int64GetDatum(counts[k]);
		values[4] = BoolGetDatum(pass_end);
		values[5] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
		nulls[5] = reason ? ' ' : 'n';
		pcar_spi_execute_nulls(
				"INSERT INTO " PCAR_SCHEMA ".rotation_progress AS p"
				" (key_id, relid, attnum, remaining, unrotatable, unrotatable_reason, counted_at)"
				" VALUES ($1, $2, $3, $4,"
				"   CASE WHEN $5 AND $6 IS NOT NULL THEN $4 ELSE 0 END, $6, pg_catalog.now())"
				" ON CONFLICT (key_id, relid, attnum) DO UPDATE SET"
				"   remaining = EXCLUDED.remaining,"
				/* at a pass's start the last pass's findings stand until redone */
				"   unrotatable = CASE WHEN $5 THEN"
				"     CASE WHEN $6 IS NOT NULL THEN $4 ELSE LEAST(p.unrotatable, $4) END"
				"     ELSE LEAST(p.unrotatable, $4) END,"
				"   unrotatable_reason = CASE WHEN $5 THEN COALESCE($6, p.unrotatable_reason)"
				"     WHEN $4" PCAR_EQ "0 THEN NULL"
				"     ELSE p.unrotatable_reason END,"
				"   counted_at = pg_catalog.now()",
				SPI_OK_INSERT, 6, types, values, nulls);
	}
	pcar_spi_end(&session);
}

void
pcar_progress_batch(Oid relid, AttrNumber attnum, int32 key_id, int64 reencrypted,
					int64 unrotatable, const char *unrotatable_reason)
{
	PcarSpiSession session;
	Oid			types[6] = {INT4OID, OIDOID, INT2OID, INT8OID, INT8OID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = "      ";

	values[0] = Int32GetDatum(key_id);
	values[1] = ObjectIdGetDatum(relid);
	values[2] = Int16GetDatum(attnum);
	values[3] = Int64GetDatum(reencrypted);
	values[4] = Int64GetDatum(unrotatable);
	values[5] = unrotatable_reason ? CStringGetTextDatum(unrotatable_reason) : (Datum) 0;
	nulls[5] = unrotatable_reason ? ' ' : 'n';

	pcar_spi_begin(&session);
	pcar_spi_execute_nulls(
			"INSERT INTO " PCAR_SCHEMA ".rotation_progress AS p"
			" (key_id, relid, attnum, reencrypted, unrotatable, unrotatable_reason)"
			" VALUES ($1, $2, $3, $4, $5, $6)"
			" ON CONFLICT (key_id, relid, attnum) DO UPDATE SET"
			"   reencrypted = p.reencrypted + $4,"
			"   remaining = GREATEST(p.remaining - $4, 0),"
			"   unrotatable = p.unrotatable + $5,"
			"   unrotatable_reason = COALESCE($6, p.unrotatable_reason),"
			"   last_batch_at = pg_catalog.now()",
			SPI_OK_INSERT, 6, types, values, nulls);
	pcar_spi_end(&session);
}

void
pcar_progress_note(Oid relid, AttrNumber attnum, int nkeys, const int32 *key_ids,
				   const char *message)
{
	PcarSpiSession session;
	Oid			types[4] = {INT4ARRAYOID, OIDOID, INT2OID, TEXTOID};
	Datum		values[4];

	if (nkeys == 0)
		return;
	values[0] = int4_array(key_ids, nkeys);
	values[1] = ObjectIdGetDatum(relid);
	values[2] = Int16GetDatum(attnum);
	values[3] = CStringGetTextDatum(message);

	pcar_spi_begin(&session);
	pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".rotation_progress AS p"
					 " (key_id, relid, attnum, last_error, last_error_at)"
					 " SELECT k, $2, $3, $4, pg_catalog.now() FROM pg_catalog.unnest($1) k"
					 " ON CONFLICT (key_id, relid, attnum) DO UPDATE SET"
					 "   last_error = $4, last_error_at = pg_catalog.now()",
					 SPI_OK_INSERT, 4, types, values);
	pcar_spi_end(&session);
}

void
pcar_progress_forget_key(int32 key_id)
{
	PcarSpiSession session;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(key_id)};

	pcar_spi_begin(&session);
	pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".rotation_progress WHERE key_id" PCAR_EQ "$1",
					 SPI_OK_DELETE, 1, types, values);
	pcar_spi_end(&session);
}

bool
pcar_failure_record(Oid relid, const char *message, int naptime_seconds)
{
	PcarSpiSession session;
	Oid			types[3] = {OIDOID, TEXTOID, INT4OID};
	Datum		values[3] = {ObjectIdGetDatum(relid), CStringGetTextDatum(message),
	Int32GetDatum(naptime_seconds)};
	bool		log = true;

	pcar_spi_begin(&session);
	pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".rotation_failure AS f"
					 " (relid, failures, last_error, retry_after)"
					 " VALUES ($1, 1, $2, pg_catalog.now()"
					 PCAR_OP("+") "pg_catalog.make_interval(secs => $3))"
					 " ON CONFLICT (relid) DO UPDATE SET"
					 "   failures = f.failures" PCAR_OP("+") "1,"
					 "   last_error = $2,"
					 "   last_failed_at = pg_catalog.now(),"
					 "   retry_after = pg_catalog.now()" PCAR_OP("+") "pg_catalog.make_interval(secs =>"
					 "     $3::pg_catalog.float8" PCAR_OP("*")
					 "     pg_catalog.power(2, LEAST(f.failures, 6)))"
					 " RETURNING failures" PCAR_EQ "1"
					 "   OR (failures" PCAR_OP("&") "(failures" PCAR_OP("-") "1))" PCAR_EQ "0"
					 "   OR last_error IS DISTINCT FROM"
					 "      (SELECT o.last_error FROM " PCAR_SCHEMA ".rotation_failure o"
					 "        WHERE o.relid" PCAR_EQ "$1)",
					 SPI_OK_INSERT_RETURNING, 3, types, values);
	if (SPI_processed == 1)
	{
		bool		isnull;

		log = DatumGetBool(pcar_spi_datum(0, 1, &isnull)) || isnull;
	}
	pcar_spi_end(&session);
	return log;
}

void
pcar_failure_forget(Oid relid)
{
	PcarSpiSession session;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	pcar_spi_begin(&session);
	pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".rotation_failure WHERE relid" PCAR_EQ "$1",
					 SPI_OK_DELETE, 1, types, values);
	pcar_spi_end(&session);
}

void
pcar_forget_tables_except(const Oid *relids, int nrelids)
{
	PcarSpiSession session;
	Datum	   *datums = palloc(sizeof(Datum) * Max(nrelids, 1));
	Oid			types[1] = {OIDARRAYOID};
	Datum		values[1];

	for (int i = 0; i < nrelids; i++)
		datums[i] = ObjectIdGetDatum(relids[i]);
	values[0] = PointerGetDatum(construct_array(datums, nrelids, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	pcar_spi_begin(&session);
	pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".rotation_failure"
					 " WHERE relid" PCAR_OP("<>") "ALL ($1)",
					 SPI_OK_DELETE, 1, types, values);
	/* notes outside any table (relid 0) stay until the key goes */
	pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".rotation_progress"
					 " WHERE relid" PCAR_OP("<>") "0 AND relid" PCAR_OP("<>") "ALL ($1)",
					 SPI_OK_DELETE, 1, types, values);
	pcar_spi_end(&session);
}

List *
pcar_failing_tables(List **backing_off)
{
	PcarSpiSession session;
	List	   *relids = NIL;

	*backing_off = NIL;
	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT relid, retry_after" PCAR_OP(">") "pg_catalog.now()"
					 "  FROM " PCAR_SCHEMA ".rotation_failure",
					 SPI_OK_SELECT, 0, NULL, NULL);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(pcar_spi_datum(i, 1, &isnull));
		bool		waiting = DatumGetBool(pcar_spi_datum(i, 2, &isnull));
		MemoryContext old = MemoryContextSwitchTo(session.caller_context);

		relids = lappend_oid(relids, relid);
		if (waiting)
			*backing_off = lappend_oid(*backing_off, relid);
		MemoryContextSwitchTo(old);
	}
	pcar_spi_end(&session);
	return relids;
}
