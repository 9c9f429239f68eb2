/*
 * key_store.c
 *		SQL access to the key tables.
 *
 * The tables are not readable by PUBLIC; a caller allowed to execute an
 * extension function reaches them through this module, which runs its
 * queries as the tables' owner in a security-restricted context.  Every
 * name is schema-qualified and every operator pinned to pg_catalog, so no
 * object a user creates can take part.
 *
 * Data keys exist in plaintext only in locked memory, between their random
 * generation and their sealing to each server's public key.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "key_store.h"
#include "pgcrypt_at_rest.h"
#include "server_key.h"
#include "sodium_provider.h"
#include "spi_session.h"



Oid
pcar_store_key_table_oid(bool missing_ok)
{
	return pcar_extension_table_oid("data_key", missing_ok);
}

/*
 * The order keys were made in.  A key restored from a dump taken before 1.4
 * has no created_order; its serial id, below every random one, gives it.
 */
#define PCAR_KEY_AGE(alias) "COALESCE(" alias ".created_order, " alias ".id)"

/* Read off the newest object of each version, so older tables keep working. */
PcarSchemaLevel
pcar_store_schema_level(void)
{
	Oid			data_key = pcar_extension_table_oid("data_key", true);

	if (OidIsValid(data_key) && get_attnum(data_key, "created_order") != InvalidAttrNumber)
		return PCAR_SCHEMA_1_4;
	if (OidIsValid(pcar_extension_table_oid("rotation_failure", true)))
		return PCAR_SCHEMA_1_3;
	return PCAR_SCHEMA_BEFORE_1_3;
}

bool
pcar_store_schema_is_current(void)
{
	return pcar_store_schema_level() == PCAR_SCHEMA_CURRENT;
}

void
pcar_store_require_current_schema(void)
{
	if (!pcar_store_schema_is_current())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"pgcrypt_at_rest\" in this database is older than its library"),
				 errhint("Run ALTER EXTENSION pgcrypt_at_rest UPDATE.")));
}

/*
 * The name is not quoted: encrypt(keyring, plaintext) with its arguments
 * swapped would otherwise put the plaintext in the message and the log.
 */
void
pcar_report_unknown_keyring(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("the keyring given to encrypt() does not exist"),
			 errhint("Check the order of the arguments, encrypt(plaintext, keyring [, context]); pgcrypt_at_rest.keyrings lists the keyrings.")));
}

bool
pcar_store_fetch_key(int32 key_id, PcarStoredKey *key)
{
	PcarSpiSession session;
	Oid			types[2] = {INT4OID, BYTEAOID};
	Datum		values[2];
	bool		isnull;
	char	   *status;
	bool		found;

	pcar_server_key_require();
	values[0] = Int32GetDatum(key_id);
	values[1] = pcar_bytea_datum(pcar_server_public_key(), PCAR_SERVER_KEY_BYTES);

	pcar_spi_begin(&session);
	key->latest = pcar_spi_select_latest(
		"SELECT r.name, k.status, k.destroyed_at::pg_catalog.text, s.sealed"
		" FROM " PCAR_SCHEMA ".data_key k"
		" JOIN " PCAR_SCHEMA ".keyring r ON r.id" PCAR_EQ "k.keyring_id"
		" LEFT JOIN " PCAR_SCHEMA ".sealed_key s"
		"   ON s.key_id" PCAR_EQ "k.id AND s.server_public_key" PCAR_EQ "$2"
		" WHERE k.id" PCAR_EQ "$1",
		2, types, values);

	found = SPI_processed == 1;
	if (found)
	{
		char	   *destroyed_at = pcar_spi_text(0, 3);
		Datum		sealed;

		key->key_id = key_id;
		strlcpy(key->keyring, pcar_spi_text(0, 1), sizeof(key->keyring));
		status = pcar_spi_text(0, 2);
		if (strcmp(status, "active") == 0)
			key->status = PCAR_KEY_ACTIVE;
		else if (strcmp(status, "deprecated") == 0)
			key->status = PCAR_KEY_DEPRECATED;
		else if (strcmp(status, "destroyed") == 0)
			key->status = PCAR_KEY_DESTROYED;
		else
			elog(ERROR, "key %d has unknown status \"%s\"", key_id, status);
		key->destroyed_at = destroyed_at ? MemoryContextStrdup(session.caller_context, destroyed_at) : NULL;

		sealed = pcar_spi_datum(0, 4, &isnull);
		key->has_copy = !isnull;
		if (key->has_copy)
		{
			bytea	   *raw = DatumGetByteaPP(sealed);

			if (VARSIZE_ANY_EXHDR(raw) != PCAR_SEALED_KEY_BYTES)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("sealed copy of key %d has the wrong length", key_id)));
			memcpy(key->sealed, VARDATA_ANY(raw), PCAR_SEALED_KEY_BYTES);
		}
	}
	pcar_spi_end(&session);
	return found;
}

int32
pcar_store_active_key_id(const char *keyring, bool *latest)
{
	PcarSpiSession session;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(keyring)};
	bool		isnull;
	Datum		key_id;

	/* a missing secret is the problem to report, whatever the keyring */
	pcar_server_key_require();
	pcar_spi_begin(&session);
	*latest = pcar_spi_select_latest("SELECT k.id FROM " PCAR_SCHEMA ".keyring r"
								  " LEFT JOIN " PCAR_SCHEMA ".data_key k"
								  "   ON k.keyring_id" PCAR_EQ "r.id AND k.status" PCAR_EQ "'active'"
								  " WHERE r.name" PCAR_EQ "$1",
								  1, types, values);
	if (SPI_processed == 0)
		pcar_report_unknown_keyring();
	key_id = pcar_spi_datum(0, 1, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("keyring \"%s\" has no active key", keyring),
				 errhint("Make one with pgcrypt_at_rest.rotate_keyring().")));
	pcar_spi_end(&session);
	return DatumGetInt32(key_id);
}

/*
 * Data keys are sealed for every registered server.  This server must be
 * one of them, or it would create keys it cannot use; an empty table means
 * the extension was created before a secret was loaded, so register now.
 */
static void
require_local_server_registered(void)
{
	Oid			types[1] = {BYTEAOID};
	Datum		values[1];

	values[0] = pcar_bytea_datum(pcar_server_public_key(), PCAR_SERVER_KEY_BYTES);
	/* a server moving to a new secret is itself with either */
	if (pcar_store_schema_level() >= PCAR_SCHEMA_1_3)
		pcar_spi_execute("SELECT pg_catalog.count(*)" PCAR_EQ "0,"
						 " pg_catalog.bool_or(public_key" PCAR_EQ "$1 OR pending_public_key" PCAR_EQ "$1)"
						 " FROM " PCAR_SCHEMA ".server",
						 SPI_OK_SELECT, 1, types, values);
	else
		pcar_spi_execute("SELECT pg_catalog.count(*)" PCAR_EQ "0,"
						 " pg_catalog.bool_or(public_key" PCAR_EQ "$1)"
						 " FROM " PCAR_SCHEMA ".server",
						 SPI_OK_SELECT, 1, types, values);
	{
		bool		isnull;
		bool		empty = DatumGetBool(pcar_spi_datum(0, 1, &isnull));
		bool		present = DatumGetBool(pcar_spi_datum(0, 2, &isnull)) && !isnull;

		if (empty)
			pcar_store_register_local_server();
		else if (!present)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this server is not registered in pgcrypt_at_rest.servers"),
					 errdetail("Its secret was loaded, but its public key is not among the servers that keys are sealed to."),
					 errhint("Use the server whose secret created this database's keys, or load that secret here.")));
	}
}

/*
 * A new key's id, drawn at random from [2^24, 2^31) and unique in this
 * database.  Serial ids repeat across databases, so a value copied from
 * one to another named a key that existed there, another key, and was
 * reported as altered; a random id is almost surely absent elsewhere, so
 * such a value gets "does not exist in this database".  The range starts
 * above the serial ids of keys made before version 1.4.
 */
static int32
draw_key_id(void)
{
	uint32		drawn;

	pcar_random_bytes((uint8 *) &drawn, sizeof(drawn));
	return (int32) (PCAR_FIRST_RANDOM_KEY_ID + drawn % (PG_INT32_MAX - PCAR_FIRST_RANDOM_KEY_ID + 1U));
}

/* Inserts the key's row (not its material) and returns its id. */
static int32
insert_data_key(int32 keyring_id)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(keyring_id), 0};
	bool		isnull;

	if (pcar_store_schema_level() < PCAR_SCHEMA_1_4)
	{
		/* older tables number keys from a sequence */
		if (pcar_store_schema_level() >= PCAR_SCHEMA_1_3)
			pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".data_key (keyring_id, installation)"
							 " SELECT $1, i.id FROM " PCAR_SCHEMA ".installation i RETURNING id",
							 SPI_OK_INSERT_RETURNING, 1, types, values);
		else
			pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".data_key (keyring_id) VALUES ($1) RETURNING id",
							 SPI_OK_INSERT_RETURNING, 1, types, values);
		return DatumGetInt32(pcar_spi_datum(0, 1, &isnull));
	}

	/* one draw in 2^31 / (keys in the database) repeats an id: draw again */
	for (int attempt = 0; attempt < 8; attempt++)
	{
		values[1] = Int32GetDatum(draw_key_id());
		/* made here: destruction need not wait for a restore to be confirmed */
		pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".data_key (id, keyring_id, installation, created_order)"
						 " VALUES ($2, $1, (SELECT i.id FROM " PCAR_SCHEMA ".installation i),"
						 "         pg_catalog.nextval('" PCAR_SCHEMA ".data_key_id_seq'::pg_catalog.regclass))"
						 " ON CONFLICT (id) DO NOTHING RETURNING id",
						 SPI_OK_INSERT_RETURNING, 2, types, values);
		if (SPI_processed == 1)
			return DatumGetInt32(pcar_spi_datum(0, 1, &isnull));
	}
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("could not draw an unused key id"),
			 errdetail("Eight random ids in a row were taken.")));
}

/* Makes a new active key for the keyring and seals it for every server. */
static int32
add_active_key(int32 keyring_id)
{
	Oid			seal_types[3] = {INT4OID, BYTEAOID, BYTEAOID};
	Datum		seal_values[3];
	SPITupleTable *servers;
	uint64		nservers;
	uint8	   *data_key;
	uint8		sealed[PCAR_SEALED_KEY_BYTES];
	bool		isnull;
	int32		key_id;

	key_id = insert_data_key(keyring_id);

	/* no server can be added while the new key is sealed for the others */
	pcar_spi_execute("LOCK TABLE " PCAR_SCHEMA ".server IN SHARE MODE", SPI_OK_UTILITY, 0, NULL, NULL);
	/*
	 * Read with the latest snapshot, after the lock: at REPEATABLE READ the
	 * transaction's snapshot may predate a server added or removed while we
	 * waited, and the key would miss it, or be sealed to a server gone.  A
	 * server moving to a new secret gets a copy for each of its keys.
	 */
	if (pcar_store_schema_level() >= PCAR_SCHEMA_1_3)
		(void) pcar_spi_select_latest("SELECT public_key FROM " PCAR_SCHEMA ".server"
									  " UNION SELECT pending_public_key FROM " PCAR_SCHEMA ".server"
									  " WHERE pending_public_key IS NOT NULL",
									  0, NULL, NULL);
	else
		(void) pcar_spi_select_latest("SELECT public_key FROM " PCAR_SCHEMA ".server", 0, NULL, NULL);
	servers = SPI_tuptable;
	nservers = SPI_processed;

	data_key = pcar_secure_alloc(PCAR_DATA_KEY_BYTES);
	pcar_random_bytes(data_key, PCAR_DATA_KEY_BYTES);
	PG_TRY();
	{
		for (uint64 i = 0; i < nservers; i++)
		{
			bytea	   *public_key = DatumGetByteaPP(SPI_getbinval(servers->vals[i],
																	servers->tupdesc, 1, &isnull));

			if (VARSIZE_ANY_EXHDR(public_key) != PCAR_SERVER_KEY_BYTES)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("a server public key in pgcrypt_at_rest.servers has the wrong length")));
			pcar_seal_data_key(sealed, data_key, (const uint8 *) VARDATA_ANY(public_key));
			seal_values[0] = Int32GetDatum(key_id);
			seal_values[1] = PointerGetDatum(public_key);
			seal_values[2] = pcar_bytea_datum(sealed, sizeof(sealed));
			pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".sealed_key (key_id, server_public_key, sealed)"
						  " VALUES ($1, $2, $3)",
						  SPI_OK_INSERT, 3, seal_types, seal_values);
		}
	}
	PG_FINALLY();
	{
		pcar_secure_free(data_key);
	}
	PG_END_TRY();

	return key_id;
}

int32
pcar_store_create_keyring(const char *keyring)
{
	PcarSpiSession session;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(keyring)};
	bool		isnull;
	int32		keyring_id;
	int32		key_id;

	pcar_server_key_require();
	pcar_spi_begin(&session);
	require_local_server_registered();
	pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".keyring (name) VALUES ($1)"
				  " ON CONFLICT (name) DO NOTHING RETURNING id",
				  SPI_OK_INSERT_RETURNING, 1, types, values);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("keyring \"%s\" already exists", keyring)));
	keyring_id = DatumGetInt32(pcar_spi_datum(0, 1, &isnull));
	key_id = add_active_key(keyring_id);
	pcar_spi_end(&session);
	return key_id;
}

/* Rotates the keyring, or with only_if_due only if its policy is due: 0 if not. */
static int32
rotate_keyring(const char *keyring, bool only_if_due)
{
	PcarSpiSession session;
	Oid			name_types[1] = {TEXTOID};
	Datum		name_values[1] = {CStringGetTextDatum(keyring)};
	Oid			id_types[1] = {INT4OID};
	Datum		id_values[1];
	bool		isnull;
	int32		keyring_id;
	int32		key_id;

	pcar_server_key_require();
	pcar_spi_begin(&session);
	require_local_server_registered();
	/* the row lock serialises concurrent rotations of one keyring */
	pcar_spi_execute("SELECT id FROM " PCAR_SCHEMA ".keyring WHERE name" PCAR_EQ "$1 FOR UPDATE",
				  SPI_OK_SELECT, 1, name_types, name_values);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("keyring \"%s\" does not exist", keyring),
				 errhint("Create it with pgcrypt_at_rest.create_keyring().")));
	keyring_id = DatumGetInt32(pcar_spi_datum(0, 1, &isnull));

	/*
	 * Asked again under the lock, with a new snapshot: a rotation that
	 * committed while we waited for the lock has made the policy not due.
	 */
	if (only_if_due)
	{
		pcar_spi_execute("SELECT FROM " PCAR_SCHEMA ".keyrings"
						 " WHERE name" PCAR_EQ "$1 AND policy_due AND policy_waits_for_key IS NULL",
						 SPI_OK_SELECT, 1, name_types, name_values);
		if (SPI_processed == 0)
		{
			pcar_spi_end(&session);
			return 0;
		}
	}

	id_values[0] = Int32GetDatum(keyring_id);
	pcar_spi_execute("UPDATE " PCAR_SCHEMA ".data_key"
				  " SET status = 'deprecated', deprecated_at = pg_catalog.now()"
				  " WHERE keyring_id" PCAR_EQ "$1 AND status" PCAR_EQ "'active'",
				  SPI_OK_UPDATE, 1, id_types, id_values);
	key_id = add_active_key(keyring_id);
	pcar_spi_end(&session);
	return key_id;
}

int32
pcar_store_rotate_keyring(const char *keyring)
{
	return rotate_keyring(keyring, false);
}

int32
pcar_store_rotate_keyring_if_due(const char *keyring)
{
	return rotate_keyring(keyring, true);
}

/*
 * "<cluster_name or 'server'> <first 8 hex digits of the public key>": the
 * fingerprint keeps names apart on clusters that share a name (Debian's
 * default "15/main") or a system identifier (base backup clones).
 */
static char *
local_server_name(void)
{
	const char *cluster = GetConfigOption("cluster_name", true, false);
	const uint8 *public_key = pcar_server_public_key();

	return psprintf("%s %02x%02x%02x%02x",
					(cluster != NULL && cluster[0] != '\0') ? cluster : "server",
					public_key[0], public_key[1], public_key[2], public_key[3]);
}

void
pcar_store_register_local_server(void)
{
	PcarSpiSession session;
	Oid			types[2] = {BYTEAOID, TEXTOID};
	Datum		values[2];

	pcar_require_preloaded();
	if (!pcar_server_key_loaded())
	{
		ereport(WARNING,
				(errmsg("pgcrypt_at_rest has no server secret, so this server was not registered"),
				 errhint("Set pgcrypt_at_rest.server_key_file or pgcrypt_at_rest.server_key_command and restart; the first pgcrypt_at_rest.create_keyring() then registers the server.")));
		return;
	}
	values[0] = pcar_bytea_datum(pcar_server_public_key(), PCAR_SERVER_KEY_BYTES);
	values[1] = CStringGetTextDatum(local_server_name());

	pcar_spi_begin(&session);
	pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".server (public_key, name) VALUES ($1, $2)"
				  " ON CONFLICT DO NOTHING",
				  SPI_OK_INSERT, 2, types, values);
	pcar_spi_end(&session);
}

/* Runs a query returning one int4 column; the values as a list. */
static List *
select_int_list(const char *sql, int nargs, Oid *types, Datum *values)
{
	PcarSpiSession session;
	List	   *result = NIL;

	pcar_spi_begin(&session);
	pcar_spi_execute(sql, SPI_OK_SELECT, nargs, types, values);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int32		value = DatumGetInt32(pcar_spi_datum(i, 1, &isnull));
		MemoryContext old = MemoryContextSwitchTo(session.caller_context);

		result = lappend_int(result, value);
		MemoryContextSwitchTo(old);
	}
	pcar_spi_end(&session);
	return result;
}

PcarKeyName *
pcar_store_keys_to_drain(int *nkeys)
{
	PcarSpiSession session;
	PcarKeyName *keys;

	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT k.id, r.name, r.drain_priority FROM " PCAR_SCHEMA ".data_key k"
					 " JOIN " PCAR_SCHEMA ".keyring r ON r.id" PCAR_EQ "k.keyring_id"
					 " WHERE k.status" PCAR_EQ "'deprecated' AND k.drained_at IS NULL"
					 " ORDER BY r.drain_priority DESC, " PCAR_KEY_AGE("k") " DESC",
					 SPI_OK_SELECT, 0, NULL, NULL);
	keys = MemoryContextAllocZero(session.caller_context, sizeof(PcarKeyName) * Max(SPI_processed, 1));
	*nkeys = SPI_processed;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		keys[i].key_id = DatumGetInt32(pcar_spi_datum(i, 1, &isnull));
		strlcpy(keys[i].keyring, pcar_spi_text(i, 2), NAMEDATALEN);
		keys[i].priority = DatumGetInt32(pcar_spi_datum(i, 3, &isnull));
	}
	pcar_spi_end(&session);
	return keys;
}

List *
pcar_store_deprecated_keys(void)
{
	return select_int_list("SELECT id FROM " PCAR_SCHEMA ".data_key"
						   " WHERE status" PCAR_EQ "'deprecated' ORDER BY " PCAR_KEY_AGE("data_key"),
						   0, NULL, NULL);
}

List *
pcar_store_keys_past_grace(int grace_seconds)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(grace_seconds)};

	return select_int_list("SELECT id FROM " PCAR_SCHEMA ".data_key"
						   " WHERE status" PCAR_EQ "'deprecated' AND drained_at IS NOT NULL"
						   "   AND drained_at" PCAR_OP("+") "pg_catalog.make_interval(secs => $1)"
						   "      " PCAR_OP("<=") "pg_catalog.now()"
						   " ORDER BY " PCAR_KEY_AGE("data_key"),
						   1, types, values);
}

bool
pcar_store_set_drained(int32 key_id, bool drained, int grace_seconds)
{
	PcarSpiSession session;
	Oid			types[3] = {INT4OID, BOOLOID, INT4OID};
	Datum		values[3] = {Int32GetDatum(key_id), BoolGetDatum(drained), Int32GetDatum(grace_seconds)};
	bool		due = false;

	pcar_spi_begin(&session);
	pcar_spi_execute("UPDATE " PCAR_SCHEMA ".data_key"
					 " SET drained_at = CASE WHEN $2 THEN COALESCE(drained_at, pg_catalog.now()) END"
					 " WHERE id" PCAR_EQ "$1 AND status" PCAR_EQ "'deprecated'"
					 " RETURNING $2 AND drained_at" PCAR_OP("+") "pg_catalog.make_interval(secs => $3)"
					 "  " PCAR_OP("<=") "pg_catalog.now()",
					 SPI_OK_UPDATE_RETURNING, 3, types, values);
	if (SPI_processed == 1)
	{
		bool		isnull;

		due = DatumGetBool(pcar_spi_datum(0, 1, &isnull)) &&
			!isnull;
	}
	pcar_spi_end(&session);
	return due;
}

void
pcar_store_destroy_key(int32 key_id)
{
	PcarSpiSession session;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(key_id)};

	pcar_spi_begin(&session);
	/*
	 * A change of the server set (SHARE ROW EXCLUSIVE) may be sealing this
	 * key for a new public key: wait for it to commit, so that the next
	 * statement sees and deletes that copy too; one that starts after this
	 * waits for the destruction, and no longer finds the key live.
	 */
	pcar_spi_execute("LOCK TABLE " PCAR_SCHEMA ".server IN SHARE MODE",
					 SPI_OK_UTILITY, 0, NULL, NULL);
	/* the copies go first, in the same transaction as the status */
	pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".sealed_key WHERE key_id" PCAR_EQ "$1",
					 SPI_OK_DELETE, 1, types, values);
	pcar_spi_execute("UPDATE " PCAR_SCHEMA ".data_key"
					 " SET status = 'destroyed', destroyed_at = pg_catalog.now()"
					 " WHERE id" PCAR_EQ "$1 AND status" PCAR_EQ "'deprecated'",
					 SPI_OK_UPDATE, 1, types, values);
	pcar_spi_end(&session);
}

bool
pcar_store_key_status(int32 key_id, bool lock, PcarKeyStatus *status, char *keyring)
{
	PcarSpiSession session;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(key_id)};
	bool		found;

	pcar_spi_begin(&session);
	pcar_spi_execute(lock ?
					 "SELECT k.status, r.name FROM " PCAR_SCHEMA ".data_key k"
					 " JOIN " PCAR_SCHEMA ".keyring r ON r.id" PCAR_EQ "k.keyring_id"
					 " WHERE k.id" PCAR_EQ "$1 FOR UPDATE OF k" :
					 "SELECT k.status, r.name FROM " PCAR_SCHEMA ".data_key k"
					 " JOIN " PCAR_SCHEMA ".keyring r ON r.id" PCAR_EQ "k.keyring_id"
					 " WHERE k.id" PCAR_EQ "$1",
					 SPI_OK_SELECT, 1, types, values);
	found = SPI_processed == 1;
	if (found)
	{
		char	   *text = pcar_spi_text(0, 1);

		*status = strcmp(text, "active") == 0 ? PCAR_KEY_ACTIVE :
			strcmp(text, "deprecated") == 0 ? PCAR_KEY_DEPRECATED : PCAR_KEY_DESTROYED;
		strlcpy(keyring, pcar_spi_text(0, 2), NAMEDATALEN);
	}
	pcar_spi_end(&session);
	return found;
}

void
pcar_store_deprecate_key(int32 key_id)
{
	PcarSpiSession session;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(key_id)};
	char	   *status;
	char	   *keyring;

	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT k.status, r.name FROM " PCAR_SCHEMA ".data_key k"
					 " JOIN " PCAR_SCHEMA ".keyring r ON r.id" PCAR_EQ "k.keyring_id"
					 " WHERE k.id" PCAR_EQ "$1 FOR UPDATE OF k",
					 SPI_OK_SELECT, 1, types, values);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key %d does not exist", key_id)));
	status = pcar_spi_text(0, 1);
	keyring = MemoryContextStrdup(session.caller_context,
								  pcar_spi_text(0, 2));
	if (strcmp(status, "destroyed") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key %d was destroyed", key_id)));
	pcar_spi_end(&session);

	/* the active key is replaced, so the keyring always has one */
	if (strcmp(status, "active") == 0)
		(void) pcar_store_rotate_keyring(keyring);
	else
		ereport(NOTICE,
				(errmsg("key %d of keyring \"%s\" is already deprecated", key_id, keyring)));
}

void
pcar_store_alter_keyring(const char *keyring, const PcarKeyringChange *change)
{
	PcarSpiSession session;
	Oid			types[7] = {TEXTOID, INTERVALOID, INT8OID, BOOLOID, BOOLOID, BOOLOID, INT4OID};
	Datum		values[7];
	char		nulls[7] = "       ";
	bool		current = pcar_store_schema_level() >= PCAR_SCHEMA_1_3;

	values[0] = CStringGetTextDatum(keyring);
	values[1] = change->rotate_after;
	nulls[1] = change->rotate_after_null || !change->set_rotate_after ? 'n' : ' ';
	values[2] = Int64GetDatum(change->max_encryptions);
	nulls[2] = change->max_encryptions_null || !change->set_max_encryptions ? 'n' : ' ';
	values[3] = BoolGetDatum(change->set_rotate_after);
	values[4] = BoolGetDatum(change->set_max_encryptions);
	values[5] = BoolGetDatum(change->set_priority);
	values[6] = Int32GetDatum(change->priority);

	pcar_spi_begin(&session);
	if (current)
		pcar_spi_execute_nulls("UPDATE " PCAR_SCHEMA ".keyring"
							   " SET rotate_after = CASE WHEN $4 THEN $2 ELSE rotate_after END,"
							   "     max_encryptions = CASE WHEN $5 THEN $3 ELSE max_encryptions END,"
							   "     drain_priority = CASE WHEN $6 THEN $7 ELSE drain_priority END"
							   " WHERE name" PCAR_EQ "$1",
							   SPI_OK_UPDATE, 7, types, values, nulls);
	else
		pcar_spi_execute_nulls("UPDATE " PCAR_SCHEMA ".keyring"
							   " SET rotate_after = CASE WHEN $4 THEN $2 ELSE rotate_after END,"
							   "     max_encryptions = CASE WHEN $5 THEN $3 ELSE max_encryptions END"
							   " WHERE name" PCAR_EQ "$1",
							   SPI_OK_UPDATE, 5, types, values, nulls);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("keyring \"%s\" does not exist", keyring)));
	pcar_spi_end(&session);
}

void
pcar_store_add_encryptions(int32 key_id, int64 count)
{
	PcarSpiSession session;
	Oid			types[2] = {INT4OID, INT8OID};
	Datum		values[2] = {Int32GetDatum(key_id), Int64GetDatum(count)};

	pcar_spi_begin(&session);
	pcar_spi_execute("UPDATE " PCAR_SCHEMA ".data_key"
					 " SET encryptions = encryptions" PCAR_OP("+") "$2 WHERE id" PCAR_EQ "$1",
					 SPI_OK_UPDATE, 2, types, values);
	pcar_spi_end(&session);
}

/* Runs a query returning one text column; the values as a list of strings. */
static List *
select_text_list(const char *sql, int nargs, Oid *types, Datum *values)
{
	PcarSpiSession session;
	List	   *result = NIL;

	pcar_spi_begin(&session);
	pcar_spi_execute(sql, SPI_OK_SELECT, nargs, types, values);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(session.caller_context);

		result = lappend(result, pstrdup(pcar_spi_text(i, 1)));
		MemoryContextSwitchTo(old);
	}
	pcar_spi_end(&session);
	return result;
}

List *
pcar_store_keyrings_due(void)
{
	/*
	 * Not while an earlier key still drains (policy_waits_for_key): a policy
	 * faster than the drain would pile up keys.
	 */
	return select_text_list("SELECT name FROM " PCAR_SCHEMA ".keyrings"
							" WHERE policy_due AND policy_waits_for_key IS NULL ORDER BY name",
							0, NULL, NULL);
}

List *
pcar_store_policies_waiting(void)
{
	return select_text_list("SELECT pg_catalog.format('keyring %I waits for key %s', name, policy_waits_for_key)"
							"  FROM " PCAR_SCHEMA ".keyrings"
							" WHERE policy_due AND policy_waits_for_key IS NOT NULL ORDER BY name",
							0, NULL, NULL);
}

char *
pcar_store_destruction_hold(int32 key_id)
{
	PcarSpiSession session;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(key_id)};
	char	   *hold = NULL;

	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT " PCAR_INTERNAL_SCHEMA "._destruction_hold(installation)"
					 "  FROM " PCAR_SCHEMA ".data_key WHERE id" PCAR_EQ "$1",
					 SPI_OK_SELECT, 1, types, values);
	if (SPI_processed == 1)
	{
		char	   *text = pcar_spi_text(0, 1);

		if (text != NULL)
			hold = MemoryContextStrdup(session.caller_context, text);
	}
	pcar_spi_end(&session);
	return hold;
}

int64
pcar_store_confirm_restore(void)
{
	PcarSpiSession session;
	int64		adopted;

	pcar_spi_begin(&session);
	pcar_spi_execute("UPDATE " PCAR_SCHEMA ".data_key SET installation = i.id"
					 "  FROM " PCAR_SCHEMA ".installation i"
					 " WHERE data_key.installation IS DISTINCT FROM i.id",
					 SPI_OK_UPDATE, 0, NULL, NULL);
	adopted = SPI_processed;
	pcar_spi_end(&session);
	return adopted;
}

/*
 * Servers joining and leaving (servers.c decides; these only read and
 * write).  Every change of the server set holds the server table in SHARE
 * ROW EXCLUSIVE mode to the end of the transaction: it conflicts with
 * itself and with the SHARE lock add_active_key() takes, so no key is made
 * while the set changes, and no two changes interleave.
 */
void
pcar_store_lock_servers(void)
{
	PcarSpiSession session;

	pcar_spi_begin(&session);
	pcar_spi_execute("LOCK TABLE " PCAR_SCHEMA ".server IN SHARE ROW EXCLUSIVE MODE",
					 SPI_OK_UTILITY, 0, NULL, NULL);
	pcar_spi_end(&session);
}

/*
 * remove_server() rotates keyrings once it holds the server table, while a
 * rotation locks its keyring and then waits for the server table: locking
 * every keyring first, in one order, keeps the two from deadlocking.
 */
void
pcar_store_lock_keyrings(void)
{
	PcarSpiSession session;

	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT FROM " PCAR_SCHEMA ".keyring ORDER BY id FOR UPDATE",
					 SPI_OK_SELECT, 0, NULL, NULL);
	pcar_spi_end(&session);
}

int
pcar_store_live_keys_missing_here(int *nlive)
{
	PcarSpiSession session;
	Oid			types[1] = {BYTEAOID};
	Datum		values[1];
	bool		isnull;
	int			missing;

	values[0] = pcar_bytea_datum(pcar_server_public_key(), PCAR_SERVER_KEY_BYTES);
	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT pg_catalog.count(*) FILTER (WHERE NOT EXISTS"
					 "         (SELECT FROM " PCAR_SCHEMA ".sealed_key s"
					 "           WHERE s.key_id" PCAR_EQ "k.id AND s.server_public_key" PCAR_EQ "$1))::int4,"
					 "       pg_catalog.count(*)::int4"
					 "  FROM " PCAR_SCHEMA ".data_key k WHERE k.status" PCAR_OP("<>") "'destroyed'",
					 SPI_OK_SELECT, 1, types, values);
	missing = DatumGetInt32(pcar_spi_datum(0, 1, &isnull));
	*nlive = DatumGetInt32(pcar_spi_datum(0, 2, &isnull));
	pcar_spi_end(&session);
	return missing;
}

char *
pcar_store_server_name(const uint8 *public_key)
{
	PcarSpiSession session;
	Oid			types[1] = {BYTEAOID};
	Datum		values[1];
	char	   *name = NULL;

	values[0] = pcar_bytea_datum(public_key, PCAR_SERVER_KEY_BYTES);
	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT name FROM " PCAR_SCHEMA ".server"
					 " WHERE public_key" PCAR_EQ "$1 OR pending_public_key" PCAR_EQ "$1",
					 SPI_OK_SELECT, 1, types, values);
	if (SPI_processed > 0)
		name = MemoryContextStrdup(session.caller_context, pcar_spi_text(0, 1));
	pcar_spi_end(&session);
	return name;
}

/* A 32-byte key from a query's column, or false if NULL. */
static bool
server_key_column(int column, const char *name, uint8 *key)
{
	bool		isnull;
	Datum		value = pcar_spi_datum(0, column, &isnull);
	bytea	   *bytes;

	if (isnull)
		return false;
	bytes = DatumGetByteaPP(value);
	if (VARSIZE_ANY_EXHDR(bytes) != PCAR_SERVER_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a public key of server \"%s\" has the wrong length", name)));
	memcpy(key, VARDATA_ANY(bytes), PCAR_SERVER_KEY_BYTES);
	return true;
}

bool
pcar_store_server_keys(const char *name, uint8 *public_key, uint8 *pending_key,
					   bool *pending, int *nservers)
{
	PcarSpiSession session;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	bool		found = false;
	bool		isnull;

	pcar_spi_begin(&session);
	pcar_spi_execute("SELECT s.public_key, (SELECT pg_catalog.count(*)::int4 FROM " PCAR_SCHEMA ".server),"
					 "       s.pending_public_key"
					 "  FROM " PCAR_SCHEMA ".server s WHERE s.name" PCAR_EQ "$1",
					 SPI_OK_SELECT, 1, types, values);
	if (SPI_processed > 0)
	{
		(void) server_key_column(1, name, public_key);
		*nservers = DatumGetInt32(pcar_spi_datum(0, 2, &isnull));
		*pending = server_key_column(3, name, pending_key);
		found = true;
	}
	pcar_spi_end(&session);
	return found;
}

bool
pcar_store_server_public_key(const char *name, uint8 *public_key, int *nservers)
{
	uint8		pending_key[PCAR_SERVER_KEY_BYTES];
	bool		pending;

	return pcar_store_server_keys(name, public_key, pending_key, &pending, nservers);
}

void
pcar_store_set_pending_key(const char *name, const uint8 *pending_key)
{
	PcarSpiSession session;
	Oid			types[2] = {TEXTOID, BYTEAOID};
	Datum		values[2];

	values[0] = CStringGetTextDatum(name);
	values[1] = pcar_bytea_datum(pending_key, PCAR_SERVER_KEY_BYTES);
	pcar_spi_begin(&session);
	pcar_spi_execute("UPDATE " PCAR_SCHEMA ".server"
					 " SET pending_public_key = $2, pending_since = pg_catalog.now()"
					 " WHERE name" PCAR_EQ "$1",
					 SPI_OK_UPDATE, 2, types, values);
	pcar_spi_end(&session);
}

void
pcar_store_complete_key_replacement(const char *name, const uint8 *old_key)
{
	PcarSpiSession session;
	Oid			name_types[1] = {TEXTOID};
	Datum		name_values[1] = {CStringGetTextDatum(name)};
	Oid			key_types[1] = {BYTEAOID};
	Datum		key_values[1];

	key_values[0] = pcar_bytea_datum(old_key, PCAR_SERVER_KEY_BYTES);
	pcar_spi_begin(&session);
	pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".sealed_key WHERE server_public_key" PCAR_EQ "$1",
					 SPI_OK_DELETE, 1, key_types, key_values);
	pcar_spi_execute("UPDATE " PCAR_SCHEMA ".server"
					 " SET public_key = pending_public_key, pending_public_key = NULL, pending_since = NULL"
					 " WHERE name" PCAR_EQ "$1",
					 SPI_OK_UPDATE, 1, name_types, name_values);
	pcar_spi_end(&session);
}

List *
pcar_store_live_keys(void)
{
	return select_int_list("SELECT id FROM " PCAR_SCHEMA ".data_key"
						   " WHERE status" PCAR_OP("<>") "'destroyed'"
						   " ORDER BY " PCAR_KEY_AGE("data_key"),
						   0, NULL, NULL);
}

/*
 * The live keys that only this server holds a copy of: no other server's
 * public key, nor a pending one, has one.  Removing it would lose them.
 */
List *
pcar_store_keys_held_only_by(const uint8 *public_key)
{
	Oid			types[1] = {BYTEAOID};
	Datum		values[1];

	values[0] = pcar_bytea_datum(public_key, PCAR_SERVER_KEY_BYTES);
	return select_int_list("SELECT k.id FROM " PCAR_SCHEMA ".sealed_key s"
						   " JOIN " PCAR_SCHEMA ".data_key k ON k.id" PCAR_EQ "s.key_id"
						   " WHERE s.server_public_key" PCAR_EQ "$1"
						   "   AND k.status" PCAR_OP("<>") "'destroyed'"
						   "   AND NOT EXISTS (SELECT FROM " PCAR_SCHEMA ".sealed_key o"
						   "                     JOIN " PCAR_SCHEMA ".server v"
						   "                       ON o.server_public_key" PCAR_EQ "v.public_key"
						   "                       OR o.server_public_key" PCAR_EQ "v.pending_public_key"
						   "                    WHERE o.key_id" PCAR_EQ "k.id"
						   "                      AND v.public_key" PCAR_OP("<>") "$1)"
						   " ORDER BY " PCAR_KEY_AGE("k"),
						   1, types, values);
}

void
pcar_store_add_server(const char *name, const uint8 *public_key)
{
	PcarSpiSession session;
	Oid			types[2] = {BYTEAOID, TEXTOID};
	Datum		values[2];

	values[0] = pcar_bytea_datum(public_key, PCAR_SERVER_KEY_BYTES);
	values[1] = CStringGetTextDatum(name);
	pcar_spi_begin(&session);
	pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".server (public_key, name) VALUES ($1, $2)",
					 SPI_OK_INSERT, 2, types, values);
	pcar_spi_end(&session);
}

void
pcar_store_add_sealed_copy(int32 key_id, const uint8 *public_key, const uint8 *sealed)
{
	PcarSpiSession session;
	Oid			types[3] = {INT4OID, BYTEAOID, BYTEAOID};
	Datum		values[3];

	values[0] = Int32GetDatum(key_id);
	values[1] = pcar_bytea_datum(public_key, PCAR_SERVER_KEY_BYTES);
	values[2] = pcar_bytea_datum(sealed, PCAR_SEALED_KEY_BYTES);
	pcar_spi_begin(&session);
	pcar_spi_execute("INSERT INTO " PCAR_SCHEMA ".sealed_key (key_id, server_public_key, sealed)"
					 " VALUES ($1, $2, $3)",
					 SPI_OK_INSERT, 3, types, values);
	pcar_spi_end(&session);
}

List *
pcar_store_remove_server(const uint8 *public_key)
{
	Oid			types[1] = {BYTEAOID};
	Datum		values[1];
	PcarSpiSession session;
	List	   *keys;

	values[0] = pcar_bytea_datum(public_key, PCAR_SERVER_KEY_BYTES);
	/* the live keys it holds a copy of: every one of them must go */
	keys = select_int_list("SELECT k.id FROM " PCAR_SCHEMA ".sealed_key s"
						   " JOIN " PCAR_SCHEMA ".data_key k ON k.id" PCAR_EQ "s.key_id"
						   " WHERE s.server_public_key" PCAR_EQ "$1"
						   "   AND k.status" PCAR_OP("<>") "'destroyed' ORDER BY " PCAR_KEY_AGE("k"),
						   1, types, values);
	pcar_spi_begin(&session);
	/* its pending key's copies too, unless (a crafted row) another server's key */
	pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".sealed_key s USING " PCAR_SCHEMA ".server v"
					 " WHERE v.public_key" PCAR_EQ "$1"
					 "   AND (s.server_public_key" PCAR_EQ "v.public_key"
					 "        OR (s.server_public_key" PCAR_EQ "v.pending_public_key"
					 "            AND NOT EXISTS (SELECT FROM " PCAR_SCHEMA ".server o"
					 "                             WHERE o.public_key" PCAR_EQ "v.pending_public_key)))",
					 SPI_OK_DELETE, 1, types, values);
	pcar_spi_execute("DELETE FROM " PCAR_SCHEMA ".server WHERE public_key" PCAR_EQ "$1",
					 SPI_OK_DELETE, 1, types, values);
	pcar_spi_end(&session);
	return keys;
}

/* The keyrings whose active key is among key_ids (a list of names). */
List *
pcar_store_keyrings_with_active_key(List *key_ids)
{
	Oid			types[1] = {INT4ARRAYOID};
	Datum		values[1];
	Datum	   *ids = palloc(sizeof(Datum) * Max(list_length(key_ids), 1));
	int			n = 0;
	ListCell   *cell;

	foreach(cell, key_ids)
		ids[n++] = Int32GetDatum(lfirst_int(cell));
	values[0] = PointerGetDatum(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
	return select_text_list("SELECT r.name FROM " PCAR_SCHEMA ".data_key k"
							" JOIN " PCAR_SCHEMA ".keyring r ON r.id" PCAR_EQ "k.keyring_id"
							" WHERE k.status" PCAR_EQ "'active' AND k.id" PCAR_EQ "ANY ($1) ORDER BY r.name",
							1, types, values);
}
