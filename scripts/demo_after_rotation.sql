\echo '-- the worker re-encrypted the old rows and destroyed the old key'
SELECT keyring, key_id, table_name, column_name, remaining, reencrypted FROM pgcrypt_at_rest.rotation_status;
SELECT id, pgcrypt_at_rest.decrypt_text(name) AS name,
	   pgcrypt_at_rest.decrypt_text(diagnosis, pg_catalog.int8send(id)) AS diagnosis,
	   pgcrypt_at_rest.key_id(name) AS key_id
  FROM patients ORDER BY id;

\echo '-- the keys view: no key material, sealed or not'
SELECT keyring, generation, key_id, status, sealed_copies, encryptions, deprecated_at IS NOT NULL AS deprecated,
	   destroyed_at IS NOT NULL AS destroyed
  FROM pgcrypt_at_rest.keys ORDER BY keyring, generation;
SELECT * FROM pgcrypt_at_rest.keyrings;
