/*
 * servers.c
 *		Servers joining and leaving the set that data keys are sealed to.
 *
 * Adding a server seals every live key (active and deprecated) for its
 * public key, in one transaction: this server must be able to open all of
 * them, or nothing is added.  Removing a server deletes its copies and
 * replaces the active key of every keyring it could open, so that it can
 * open nothing written from then on; the worker drains the deprecated keys
 * and destroys them as after any rotation.  Moving a server to a new secret
 * seals every key for the new public key beside the old copies, and a
 * second call, once the server runs with the new secret, deletes the old
 * ones.  All of them lock the server table against new keys and each other
 * (key_store.c), and none writes a user row: the cost grows with the number
 * of keys, never with the data.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "key_cache.h"
#include "key_store.h"
#include "server_key.h"
#include "servers.h"
#include "shared_state.h"
#include "sodium_provider.h"

/*
 * Each function writes the key tables, which a standby gets from its
 * primary.  Each locks the server table and then must see every key and
 * server committed before it got the lock: a snapshot taken earlier, as
 * REPEATABLE READ keeps one, would hide them.
 */
static void
require_primary_read_committed(const char *function)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s cannot run on a standby", function),
				 errhint("Run it on the primary; the standby gets its effect through WAL.")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s must run at the READ COMMITTED isolation level", function),
				 errdetail("It must see every key and server committed before it locked the server table.")));
}

/* The public key given to add_server(), checked. */
static void
check_public_key(const bytea *public_key)
{
	if (VARSIZE_ANY_EXHDR(public_key) != PCAR_SERVER_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a server public key is %d bytes, not %d",
						PCAR_SERVER_KEY_BYTES, (int) VARSIZE_ANY_EXHDR(public_key)),
				 errhint("Give the key pgcrypt_at_rest_pubkey or pgcrypt_at_rest.server_public_key() prints, as a bytea literal: '\\x' and 64 hex digits.")));
	if (pcar_public_key_is_low_order((const uint8 *) VARDATA_ANY(public_key)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the public key is a point of small order"),
				 errdetail("Keys sealed to it could be opened by anyone."),
				 errhint("Give the public key of a secret made by pgcrypt_at_rest_keygen.")));
}

/* A public key given for a server must belong to no server yet. */
static void
require_key_unused(const uint8 *public_key)
{
	char	   *holder = pcar_store_server_name(public_key);

	if (holder != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("that public key is already used by server \"%s\"", holder),
				 errdetail("Each public key, current or one a server is moving to, belongs to one server.")));
}

/* The named server's public key and pending one; an error if there is none. */
static void
server_keys(const char *name, uint8 *key, uint8 *pending_key, bool *pending, int *nservers)
{
	if (!pcar_store_server_keys(name, key, pending_key, pending, nservers))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("server \"%s\" does not exist", name)));
}

/*
 * The live keys, once sure this server can open every one of them: it
 * seals them for another public key, and must not leave some out.
 */
static List *
live_keys_all_open_here(const char *function, const char *name)
{
	List	   *live = pcar_store_live_keys();
	ListCell   *cell;
	int			missing = 0;
	int32		first_missing = 0;

	foreach(cell, live)
	{
		PcarStoredKey stored;
		int32		key_id = lfirst_int(cell);

		if ((!pcar_store_fetch_key(key_id, &stored) || !stored.has_copy) && missing++ == 0)
			first_missing = key_id;
	}
	if (missing > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this server cannot open %d of the %d live keys, so it cannot seal them for server \"%s\"",
						missing, list_length(live), name),
				 errdetail("This server holds no copy of key %d, among others.", first_missing),
				 errhint("Run %s on a server whose pgcrypt_at_rest.servers row shows no missing keys.", function)));
	return live;
}

/* Seals each key for the public key; returns how many. */
static int
seal_keys_for(List *key_ids, const uint8 *public_key)
{
	ListCell   *cell;

	foreach(cell, key_ids)
	{
		int32		key_id = lfirst_int(cell);
		uint8		copy[PCAR_SEALED_KEY_BYTES];

		/* opened from the cache, which holds it in locked memory */
		pcar_seal_data_key(copy, pcar_key_cache_get(key_id), public_key);
		pcar_store_add_sealed_copy(key_id, public_key, copy);
	}
	return list_length(key_ids);
}

int
pcar_add_server(const char *name, const bytea *public_key)
{
	const uint8 *key = (const uint8 *) VARDATA_ANY(public_key);
	uint8		ignored[PCAR_SERVER_KEY_BYTES];
	int			nservers;
	List	   *live;

	require_primary_read_committed("add_server()");
	check_public_key(public_key);
	pcar_server_key_require();
	pcar_store_lock_servers();

	if (pcar_store_server_public_key(name, ignored, &nservers))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("server \"%s\" already exists", name),
				 errhint("Choose another name, or remove_server() it first.")));
	require_key_unused(key);

	/* every live key must open here, or nothing is added */
	live = live_keys_all_open_here("add_server()", name);
	pcar_store_add_server(name, key);
	return seal_keys_for(live, key);
}

int
pcar_remove_server(const char *name)
{
	uint8		key[PCAR_SERVER_KEY_BYTES];
	uint8		pending_key[PCAR_SERVER_KEY_BYTES];
	bool		pending;
	int			nservers;
	List	   *held;
	ListCell   *cell;

	require_primary_read_committed("remove_server()");
	pcar_server_key_require();
	pcar_store_lock_keyrings();
	pcar_store_lock_servers();
	server_keys(name, key, pending_key, &pending, &nservers);
	if (nservers == 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot remove server \"%s\": it is the last server", name),
				 errdetail("Every key would then be sealed to no server, and nothing could be decrypted again.")));
	if (memcmp(key, pcar_server_public_key(), PCAR_SERVER_KEY_BYTES) == 0 ||
		(pending && memcmp(pending_key, pcar_server_public_key(), PCAR_SERVER_KEY_BYTES) == 0))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot remove server \"%s\": this session runs on it", name),
				 errdetail("The remaining servers must re-encrypt its keys' values, and this one would no longer be one of them."),
				 errhint("Run remove_server() on another server.")));

	/* the servers left must hold every key it holds, or values are lost */
	{
		List	   *orphans = pcar_store_keys_held_only_by(key);

		if (orphans != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot remove server \"%s\": no other server holds a copy of %d of its live keys",
							name, list_length(orphans)),
					 errdetail("Values under key %d, among others, could then be decrypted nowhere.",
							   linitial_int(orphans)),
					 errhint("First make a server that stays hold them: add it with add_server() where the keys can be opened, or run a server with a secret that holds them; pgcrypt_at_rest.servers shows what each server lacks (live_keys_missing).")));
	}
	held = pcar_store_remove_server(key);
	/* a fresh active key, sealed to the servers left, for each keyring it could open */
	foreach(cell, pcar_store_keyrings_with_active_key(held))
		(void) pcar_store_rotate_keyring((const char *) lfirst(cell));
	pcar_wake_worker_at_commit();
	return list_length(held);
}

/*
 * Moving a server to a new secret: every live key is sealed for the new
 * public key too, beside the copies for the old one, so that the server
 * decrypts with its old secret until it restarts with the new one, and
 * with the new one after.  Keys made meanwhile are sealed for both.  No
 * user row is written.
 */
int
pcar_replace_server_key(const char *name, const bytea *new_public_key)
{
	const uint8 *new_key = (const uint8 *) VARDATA_ANY(new_public_key);
	uint8		old_key[PCAR_SERVER_KEY_BYTES];
	uint8		pending_key[PCAR_SERVER_KEY_BYTES];
	bool		pending;
	int			nservers;
	List	   *live;

	require_primary_read_committed("replace_server_key()");
	check_public_key(new_public_key);
	pcar_server_key_require();
	pcar_store_lock_servers();
	server_keys(name, old_key, pending_key, &pending, &nservers);
	if (pending)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("server \"%s\" is already moving to a new secret", name),
				 errhint("Restart it with that secret and run complete_server_key_replacement(%s) first.",
						 quote_literal_cstr(name))));
	require_key_unused(new_key);

	live = live_keys_all_open_here("replace_server_key()", name);
	pcar_store_set_pending_key(name, new_key);
	return seal_keys_for(live, new_key);
}

/*
 * The server runs with its new secret: the copies for the old one go.  On
 * the server itself this can be checked; another server's restart cannot be
 * seen from here, so the caller's word is taken.
 */
void
pcar_complete_server_key_replacement(const char *name)
{
	uint8		old_key[PCAR_SERVER_KEY_BYTES];
	uint8		pending_key[PCAR_SERVER_KEY_BYTES];
	bool		pending;
	int			nservers;

	require_primary_read_committed("complete_server_key_replacement()");
	pcar_server_key_require();
	pcar_store_lock_servers();
	server_keys(name, old_key, pending_key, &pending, &nservers);
	if (!pending)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("server \"%s\" is not moving to a new secret", name),
				 errhint("Start a move with replace_server_key().")));
	if (memcmp(old_key, pcar_server_public_key(), PCAR_SERVER_KEY_BYTES) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("server \"%s\" still runs with its old secret", name),
				 errdetail("This session runs on it, and its loaded secret is the one being replaced."),
				 errhint("Restart it with the new secret first.")));
	pcar_store_complete_key_replacement(name, old_key);
}

/*
 * Logged by the worker once an hour: a server restarted with a secret that
 * a database was not told about (a move or an add_server() made in another
 * database only) fails there on every value, and should say why.
 */
void
pcar_log_missing_copies(void)
{
	int			nlive;
	int			missing;

	/* without a secret nothing opens, and the start said so already */
	if (!pcar_server_key_loaded())
		return;
	missing = pcar_store_live_keys_missing_here(&nlive);
	if (missing > 0)
		ereport(WARNING,
				(errmsg("pgcrypt_at_rest: this server holds no copy of %d of the %d live keys in database \"%s\"",
						missing, nlive, get_database_name(MyDatabaseId)),
				 errdetail("It can neither decrypt nor re-encrypt values under them."),
				 errhint("In that database, on a server that can open them, run add_server() for this server (or replace_server_key(), if it moved to a new secret); pgcrypt_at_rest.servers shows what each server lacks.")));
}
