/*
 * policy.c
 *		A keyring may ask to be rotated when its active key is older than
 *		rotate_after or has encrypted max_encryptions values.  Backends count
 *		encryptions in shared memory (shared_state.c); the worker adds them to
 *		data_key.encryptions every time it wakes, in a transaction that puts
 *		them back in shared memory if it aborts.  A policy waits while an
 *		earlier key of its keyring is still being drained; the worker says
 *		so in the log (once an hour) and the keyrings view shows it.
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
	ListCell   *cell;
	bool		rotated = false;

	foreach(cell, pcar_store_keyrings_due())
	{
		const char *keyring = lfirst(cell);
		int32		key_id = pcar_store_rotate_keyring_if_due(keyring);

		if (key_id == 0)
			continue;			/* rotated by someone else meanwhile */
		rotated = true;
		ereport(LOG,
				(errmsg("pgcrypt_at_rest rotated keyring \"%s\" as its policy asks; the new key is %d",
						keyring, key_id)));
	}
	return rotated;
}

void
pcar_log_waiting_policies(void)
{
	List	   *waiting = pcar_store_policies_waiting();
	ListCell   *cell;

	foreach(cell, waiting)
		ereport(LOG,
				(errmsg("pgcrypt_at_rest: the rotation policy of %s, which still has values under it",
						(const char *) lfirst(cell)),
				 errdetail("A policy does not rotate a keyring again while an earlier key is being drained."),
				 errhint("See pgcrypt_at_rest.rotation_status for why its values cannot be re-encrypted; pgcrypt_at_rest.destroy_key() destroys it anyway.")));
}
