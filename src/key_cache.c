/*
 * key_cache.c
 *		Opened data keys, kept per backend so the per-row path does no
 *		catalog or SPI work.
 *
 * A key id's material never changes, but a key can be destroyed or stop
 * being active.  Every change to the key tables fires a statement trigger
 * that queues a relcache invalidation of the data key table; PostgreSQL
 * delivers it to the changing backend at its next command (and again if it
 * aborts, so nothing cached from the aborted change survives) and to every
 * other backend only once the change commits, which is exactly when a cache
 * must stop trusting what it holds.  On that
 * invalidation the whole cache is wiped: rotations are rare and a refill
 * costs one query per key.
 *
 * Key material lives in slabs of locked, guarded memory, never in palloc'd
 * memory, and slabs are wiped when the cache is flushed.
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"

#include "key_cache.h"
#include "key_store.h"
#include "server_key.h"
#include "sodium_provider.h"

#define SLAB_SLOTS	128

typedef struct KeySlab
{
	struct KeySlab *next;
	int			used;
	uint8	   *slots;			/* SLAB_SLOTS keys, in locked memory */
} KeySlab;

typedef struct CachedKey
{
	int32		key_id;			/* hash key */
	const uint8 *material;
} CachedKey;

typedef struct CachedActiveKey
{
	char		keyring[NAMEDATALEN];	/* hash key */
	int32		key_id;
	const uint8 *material;
} CachedActiveKey;

static MemoryContext cache_context = NULL;
static HTAB *keys_by_id = NULL;
static HTAB *active_by_keyring = NULL;
static KeySlab *slabs = NULL;
static Oid	watched_relid = InvalidOid;
static bool callback_registered = false;
static uint64 flush_count = 0;

/* Something was cached from a snapshot that may be stale: drop it at transaction end. */
static bool flush_at_transaction_end = false;
static bool xact_callback_registered = false;

/* The last key and keyring used: consecutive rows usually share them. */
static int32 last_key_id = 0;
static const uint8 *last_material = NULL;
static CachedActiveKey *last_active = NULL;

static void
key_cache_flush(void)
{
	while (slabs != NULL)
	{
		KeySlab    *next = slabs->next;

		pcar_secure_free(slabs->slots);
		slabs = next;
	}
	keys_by_id = NULL;
	active_by_keyring = NULL;
	last_key_id = 0;
	last_material = NULL;
	last_active = NULL;
	flush_count++;
	if (cache_context != NULL)
		MemoryContextReset(cache_context);
}

static void
key_cache_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == watched_relid)
		key_cache_flush();
}

static void
key_cache_xact_callback(XactEvent event, void *arg)
{
	if (flush_at_transaction_end &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		 event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		 event == XACT_EVENT_PREPARE))
	{
		key_cache_flush();
		flush_at_transaction_end = false;
	}
}

/* Keeps a result read without the latest snapshot for this transaction only. */
static void
key_cache_note_snapshot(bool latest)
{
	if (latest)
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(key_cache_xact_callback, NULL);
		xact_callback_registered = true;
	}
	flush_at_transaction_end = true;
}

/* Called before reading the key tables, so a change committed meanwhile flushes. */
static void
key_cache_watch(void)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(key_cache_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	watched_relid = pcar_store_key_table_oid(false);
}

static void
key_cache_prepare(void)
{
	HASHCTL		ctl;

	if (cache_context == NULL)
		cache_context = AllocSetContextCreate(TopMemoryContext,
											  "pgcrypt_at_rest key cache",
											  ALLOCSET_SMALL_SIZES);
	if (keys_by_id == NULL)
	{
		ctl.keysize = sizeof(int32);
		ctl.entrysize = sizeof(CachedKey);
		ctl.hcxt = cache_context;
		keys_by_id = hash_create("pgcrypt_at_rest keys", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(CachedActiveKey);
		active_by_keyring = hash_create("pgcrypt_at_rest active keys", 16, &ctl,
										HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
}

static uint8 *
key_slot_alloc(void)
{
	if (slabs == NULL || slabs->used == SLAB_SLOTS)
	{
		KeySlab    *slab = MemoryContextAlloc(cache_context, sizeof(KeySlab));

		slab->slots = pcar_secure_alloc(SLAB_SLOTS * PCAR_DATA_KEY_BYTES);
		slab->used = 0;
		slab->next = slabs;
		slabs = slab;
	}
	return slabs->slots + PCAR_DATA_KEY_BYTES * slabs->used++;
}

/* What a key is loaded for: the fix for a missing copy differs. */
typedef enum KeyUse
{
	KEY_TO_DECRYPT,
	KEY_TO_ENCRYPT,				/* the keyring's active key, for encrypt() */
} KeyUse;

static void
report_unusable_key(const PcarStoredKey *key, KeyUse use) pg_attribute_noreturn();

static void
report_unusable_key(const PcarStoredKey *key, KeyUse use)
{
	if (key->status == PCAR_KEY_DESTROYED)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key %d of keyring \"%s\" was destroyed", key->key_id, key->keyring),
				 errdetail("Its material was deleted at %s; values encrypted under it can no longer be decrypted.",
						   key->destroyed_at ? key->destroyed_at : "an unknown time"),
				 errhint("Restore the value from a backup taken before the key was destroyed.")));
	{
		/* the fix names this server's public key, which is no secret */
		char		hex[PCAR_SERVER_KEY_BYTES * 2 + 1];

		hex_encode((const char *) pcar_server_public_key(), PCAR_SERVER_KEY_BYTES, hex);
		hex[PCAR_SERVER_KEY_BYTES * 2] = '\0';
		/* after a restore elsewhere, rotating here cannot help: this server is not registered */
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("this server holds no copy of key %d of keyring \"%s\"",
						key->key_id, key->keyring),
				 use == KEY_TO_ENCRYPT ?
				 errdetail("encrypt() uses the keyring's active key, which is not sealed to this server's public key; it fails until that key is.") :
				 errdetail("The key is not sealed to this server's public key."),
				 use == KEY_TO_ENCRYPT ?
				 errhint("On a server that can open the key, add this one: SELECT pgcrypt_at_rest.add_server('a name for this server', '\\x%s'); if this database was restored from a dump, then restore its key tables from a new dump (README, \"Restoring a backup elsewhere\").", hex) :
				 errhint("On a server that can open the key, add this one: SELECT pgcrypt_at_rest.add_server('a name for this server', '\\x%s');", hex)));
	}
}

/* Loads, unseals and caches one key; every failure is an ERROR. */
static const uint8 *
key_cache_load(int32 key_id, KeyUse use)
{
	PcarStoredKey stored;
	CachedKey  *entry;
	uint8	   *material;
	bool		found;

	key_cache_watch();
	if (!pcar_store_fetch_key(key_id, &stored))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key %d does not exist in this database", key_id),
				 errdetail("The value was encrypted under a key that was never made in, nor restored into, this database."),
				 errhint("The value was probably copied from another database or cluster (a single-table dump, dblink, postgres_fdw): decrypt it there and encrypt it again here, or restore that database's key tables with its data.")));
	if (stored.status == PCAR_KEY_DESTROYED || !stored.has_copy)
		report_unusable_key(&stored, use);

	/* no catalog access below, so no invalidation can interleave */
	key_cache_prepare();
	key_cache_note_snapshot(stored.latest);
	entry = hash_search(keys_by_id, &key_id, HASH_ENTER, &found);
	entry->material = NULL;
	material = key_slot_alloc();
	if (!pcar_unseal_data_key(material, stored.sealed,
							  pcar_server_public_key(), pcar_server_secret_key()))
	{
		pcar_wipe(material, PCAR_DATA_KEY_BYTES);
		slabs->used--;
		hash_search(keys_by_id, &key_id, HASH_REMOVE, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not unseal key %d of keyring \"%s\"", key_id, stored.keyring),
				 errdetail("The copy sealed to this server does not open with this server's secret.")));
	}
	pcar_wipe(stored.sealed, sizeof(stored.sealed));
	entry->material = material;
	return material;
}

static const uint8 *
key_cache_lookup(int32 key_id, KeyUse use)
{
	CachedKey  *entry;

	if (likely(key_id == last_key_id && last_material != NULL))
		return last_material;

	entry = keys_by_id ? hash_search(keys_by_id, &key_id, HASH_FIND, NULL) : NULL;
	/* an entry without material is what a failed load left behind */
	last_material = (entry && entry->material) ? entry->material : key_cache_load(key_id, use);
	last_key_id = key_id;
	return last_material;
}

const uint8 *
pcar_key_cache_get(int32 key_id)
{
	return key_cache_lookup(key_id, KEY_TO_DECRYPT);
}

int32
pcar_key_cache_active(const char *keyring, size_t keyring_len, const uint8 **key)
{
	char		name[NAMEDATALEN] = {0};
	CachedActiveKey *entry;
	int32		key_id;
	const uint8 *material;
	bool		latest;

	if (likely(last_active != NULL && keyring_len <= PCAR_MAX_KEYRING_NAME &&
			   last_active->keyring[keyring_len] == '\0' &&
			   memcmp(last_active->keyring, keyring, keyring_len) == 0))
	{
		*key = last_active->material;
		return last_active->key_id;
	}

	/* a longer name cannot exist, and truncating it could match another */
	if (keyring_len > PCAR_MAX_KEYRING_NAME || memchr(keyring, '\0', keyring_len))
		pcar_report_unknown_keyring();
	memcpy(name, keyring, keyring_len);
	name[keyring_len] = '\0';

	entry = active_by_keyring ? hash_search(active_by_keyring, name, HASH_FIND, NULL) : NULL;
	if (likely(entry != NULL))
	{
		last_active = entry;
		*key = entry->material;
		return entry->key_id;
	}

	/*
	 * A rotation that commits between the two reads flushes the cache; the
	 * active key id read before it may then be stale, so read again.
	 */
	for (;;)
	{
		uint64		flushes_before;

		key_cache_watch();
		flushes_before = flush_count;
		key_id = pcar_store_active_key_id(name, &latest);
		material = key_cache_lookup(key_id, KEY_TO_ENCRYPT);
		if (flush_count == flushes_before)
			break;
	}

	key_cache_prepare();
	key_cache_note_snapshot(latest);
	entry = hash_search(active_by_keyring, name, HASH_ENTER, NULL);
	entry->key_id = key_id;
	entry->material = material;
	last_active = entry;
	*key = material;
	return key_id;
}

void
pcar_key_cache_invalidate_all(void)
{
	CacheInvalidateRelcacheByRelid(pcar_store_key_table_oid(false));
}
