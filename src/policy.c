/*
 * policy.c
 *		A keyring may ask to be rotated when its active key is older than
 *		rotate_after or has encrypted max_encryptions values.  Backends count
 *		encryptions in shared memory (shared_state.c); the worker adds them to
 *		data_key.encryptions every time it wakes, so a restart loses at most
 *		the counts of one nap.
 */
#include "postgres.h"

#include "miscadmin.h"

#include "key_store.h"
#include "policy.h"
#include "shared_state.h"

#define COUNTS_PER_CALL 256

void
pcar_persist_encryption_counts(void)
{
	int32		key_ids[COUNTS_PER_CALL];
	uint64		counts[COUNTS_PER_CALL];
	int			n;

	do
	{
		n = pcar_shared_take_encryptions(MyDatabaseId, key_ids, counts, COUNTS_PER_CALL);
		for (int i = 0; i < n; i++)
			pcar_store_add_encryptions(key_ids[i], (int64) counts[i]);
	} while (n == COUNTS_PER_CALL);
}

bool
pcar_apply_rotation_policies(void)
{
	List	   *due = pcar_store_keyrings_due();
	ListCell   *cell;

	foreach(cell, due)
	{
		const char *keyring = lfirst(cell);
		int32		key_id = pcar_store_rotate_keyring(keyring);

		ereport(LOG,
				(errmsg("pgcrypt_at_rest rotated keyring \"%s\" as its policy asks; the new key is %d",
						keyring, key_id)));
	}
	return due != NIL;
}
