/*
 * key_store.h
 *		Reading and writing the key tables (keyrings, data keys with their
 *		drain state, servers, sealed copies, and this database's
 *		installation).  The only module that runs SQL against them.
 */
#ifndef PCAR_KEY_STORE_H
#define PCAR_KEY_STORE_H

#include "nodes/pg_list.h"

#include "sodium_provider.h"

typedef enum PcarKeyStatus
{
	PCAR_KEY_ACTIVE,
	PCAR_KEY_DEPRECATED,
	PCAR_KEY_DESTROYED
} PcarKeyStatus;

typedef struct PcarStoredKey
{
	int32		key_id;
	char		keyring[NAMEDATALEN];
	PcarKeyStatus status;
	char	   *destroyed_at;	/* text form, when destroyed */
	bool		has_copy;		/* a copy is sealed to this server */
	bool		latest;			/* read with the latest snapshot: cacheable */
	uint8		sealed[PCAR_SEALED_KEY_BYTES];
} PcarStoredKey;

/* Longest keyring name, in bytes; enforced by the keyring table too. */
#define PCAR_MAX_KEYRING_NAME	(NAMEDATALEN - 1)

/* Returns false when no key has this id. */
extern bool pcar_store_fetch_key(int32 key_id, PcarStoredKey *key);

/*
 * The id of the keyring's active key; errors if the keyring does not exist.
 * *latest is false when the answer may be older than committed changes.
 */
extern int32 pcar_store_active_key_id(const char *keyring, bool *latest);

extern void pcar_report_unknown_keyring(void) pg_attribute_noreturn();

extern int32 pcar_store_create_keyring(const char *keyring);
extern int32 pcar_store_rotate_keyring(const char *keyring);
/* For a policy: rotates only if still due once the keyring is locked; else 0. */
extern int32 pcar_store_rotate_keyring_if_due(const char *keyring);

/* Adds this server's public key to the servers table, if a secret is loaded. */
extern void pcar_store_register_local_server(void);

/* Keys made from version 1.4 on have ids in [PCAR_FIRST_RANDOM_KEY_ID, 2^31). */
#define PCAR_FIRST_RANDOM_KEY_ID	(1 << 24)

/* The versions whose tables differ in what this library reads or writes. */
typedef enum PcarSchemaLevel
{
	PCAR_SCHEMA_BEFORE_1_3,
	PCAR_SCHEMA_1_3,			/* servers can change; rotation_failure */
	PCAR_SCHEMA_1_4,			/* key ids drawn at random; created_order */
} PcarSchemaLevel;

#define PCAR_SCHEMA_CURRENT PCAR_SCHEMA_1_4

/*
 * Encryption and decryption work with every level.  Rotation needs the
 * current one, so it errors (with a hint to run ALTER EXTENSION ... UPDATE)
 * or, in the worker, waits until the database has it.
 */
extern PcarSchemaLevel pcar_store_schema_level(void);
extern bool pcar_store_schema_is_current(void);
extern void pcar_store_require_current_schema(void);

/* OID of the data key table, whose relcache invalidation flushes key caches. */
extern Oid	pcar_store_key_table_oid(bool missing_ok);


/* A key and the name of its keyring. */
typedef struct PcarKeyName
{
	int32		key_id;
	char		keyring[NAMEDATALEN];
	int32		priority;		/* its keyring's drain priority */
} PcarKeyName;

/* The drain state of keys (see drain.c, key_destruction.c). */

/* Deprecated keys not found drained yet: highest drain priority first, then newest. */
extern PcarKeyName *pcar_store_keys_to_drain(int *nkeys);
extern List *pcar_store_deprecated_keys(void);
extern List *pcar_store_keys_past_grace(int grace_seconds);
/* Marks (or unmarks) a key drained; true if it is drained and its grace is over. */
extern bool pcar_store_set_drained(int32 key_id, bool drained, int grace_seconds);
extern void pcar_store_destroy_key(int32 key_id);
extern void pcar_store_deprecate_key(int32 key_id);

/*
 * A key's status and keyring (NAMEDATALEN bytes); false when no key has
 * this id.  With lock, its row stays locked (FOR UPDATE) until the
 * transaction ends.  Needs no server secret.
 */
extern bool pcar_store_key_status(int32 key_id, bool lock, PcarKeyStatus *status, char *keyring);

/* Rotation policies */
/* What alter_keyring() changes: each set_ flag says whether to touch it. */
typedef struct PcarKeyringChange
{
	bool		set_rotate_after;
	bool		rotate_after_null;
	Datum		rotate_after;
	bool		set_max_encryptions;
	bool		max_encryptions_null;
	int64		max_encryptions;
	bool		set_priority;
	int32		priority;
} PcarKeyringChange;

extern void pcar_store_alter_keyring(const char *keyring, const PcarKeyringChange *change);
extern void pcar_store_add_encryptions(int32 key_id, int64 count);
extern List *pcar_store_keyrings_due(void);
/* "keyring K waits for key N" for each policy due that waits for a key still draining. */
extern List *pcar_store_policies_waiting(void);

/*
 * Why the key must not be destroyed whatever its count (Citus installed, or
 * restored from a dump and the restore not confirmed), or NULL.
 */
extern char *pcar_store_destruction_hold(int32 key_id);

/* Keys restored from a dump become this installation's; returns how many. */
extern int64 pcar_store_confirm_restore(void);

/*
 * The server set (servers.c decides what changes).  Changes first lock the
 * server table against new keys and each other, to the end of the
 * transaction.
 */
extern void pcar_store_lock_servers(void);
/* Every keyring's row, in id order: taken before the server table by a change that rotates. */
extern void pcar_store_lock_keyrings(void);
/* The name of the server with that public key, or NULL. */
extern char *pcar_store_server_name(const uint8 *public_key);
/* Its public key, and how many servers there are; false if no such server. */
extern bool pcar_store_server_public_key(const char *name, uint8 *public_key, int *nservers);
/* The same, and the public key it is moving to (*pending), if any. */
extern bool pcar_store_server_keys(const char *name, uint8 *public_key, uint8 *pending_key,
								   bool *pending, int *nservers);
/* A server moving to a new secret: copies are sealed for both keys meanwhile. */
extern void pcar_store_set_pending_key(const char *name, const uint8 *pending_key);
/* The move is over: the old key's copies go, the pending key is the server's. */
extern void pcar_store_complete_key_replacement(const char *name, const uint8 *old_key);
/* How many live keys this server holds no copy of; *nlive, how many there are. */
extern int	pcar_store_live_keys_missing_here(int *nlive);
/* Keys not destroyed, by id, locked against destruction until commit. */
extern List *pcar_store_live_keys(void);
/* The live keys no server but the one with this public key holds a copy of. */
extern List *pcar_store_keys_held_only_by(const uint8 *public_key);
extern void pcar_store_add_server(const char *name, const uint8 *public_key);
extern void pcar_store_add_sealed_copy(int32 key_id, const uint8 *public_key, const uint8 *sealed);
/* Deletes the server and its copies; returns the live keys it held a copy of. */
extern List *pcar_store_remove_server(const uint8 *public_key);
/* The names of the keyrings whose active key is one of key_ids. */
extern List *pcar_store_keyrings_with_active_key(List *key_ids);

#endif							/* PCAR_KEY_STORE_H */
