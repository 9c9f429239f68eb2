/*
 * key_store.h
 *		Reading and writing the key tables (keyrings, data keys, servers and
 *		sealed copies).  The only module that runs SQL against them.
 */
#ifndef PCAR_KEY_STORE_H
#define PCAR_KEY_STORE_H

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

/* Adds this server's public key to the servers table, if a secret is loaded. */
extern void pcar_store_register_local_server(void);

/* OID of the data key table, whose relcache invalidation flushes key caches. */
extern Oid	pcar_store_key_table_oid(bool missing_ok);

#endif							/* PCAR_KEY_STORE_H */
