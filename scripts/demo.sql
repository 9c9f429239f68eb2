\echo '-- the extension registers this server by its public key'
CREATE EXTENSION pgcrypt_at_rest;
SELECT name, encode(public_key, 'hex') AS public_key FROM pgcrypt_at_rest.servers;

\echo '-- a keyring with its first active key'
SELECT pgcrypt_at_rest.create_keyring('patients') AS first_key_id;

CREATE TABLE patients (
	id bigint PRIMARY KEY,
	name pgcrypt_at_rest.encrypted NOT NULL,
	diagnosis pgcrypt_at_rest.encrypted
);

\echo '-- each diagnosis is bound to its row: its context is the row id, pg_catalog.int8send(id),'
\echo '-- declared for the column so that the rotation worker can re-encrypt it'
SELECT pgcrypt_at_rest.set_column_context('patients', 'diagnosis', 'pg_catalog.int8send(id)');

\echo '-- insert rows: values are encrypted before they reach the table'
INSERT INTO patients VALUES
	(1, pgcrypt_at_rest.encrypt('Ada Lovelace', 'patients'),
		pgcrypt_at_rest.encrypt('migraine', 'patients', pg_catalog.int8send(1))),
	(2, pgcrypt_at_rest.encrypt('Alan Turing', 'patients'),
		pgcrypt_at_rest.encrypt('hay fever', 'patients', pg_catalog.int8send(2)));

\echo '-- what the table holds'
SELECT id, name, pgcrypt_at_rest.key_id(name) AS key_id FROM patients ORDER BY id;

\echo '-- read back, decrypted (the diagnosis with its row''s context)'
SELECT id,
	   pgcrypt_at_rest.decrypt_text(name) AS name,
	   pgcrypt_at_rest.decrypt_text(diagnosis, pg_catalog.int8send(id)) AS diagnosis
  FROM patients ORDER BY id;

\echo '-- a value moved to another row does not decrypt there. Expected: decrypting row 1''s'
\echo '-- diagnosis with row 2''s context fails with "could not decrypt a value under key N"'
DO $$
BEGIN
	PERFORM pgcrypt_at_rest.decrypt_text(diagnosis, pg_catalog.int8send(2)) FROM patients WHERE id = 1;
	RAISE EXCEPTION 'row 1''s diagnosis decrypted with row 2''s context: this is a bug';
EXCEPTION WHEN SQLSTATE '22000' THEN  -- could not decrypt a value
	RAISE NOTICE 'as expected: %', SQLERRM;
END
$$;

\echo '-- the background workers'
SELECT backend_type, datname FROM pg_stat_activity
 WHERE backend_type LIKE 'pgcrypt_at_rest%' ORDER BY 1;

\echo '-- rotate: a new active key; the worker re-encrypts the old key''s values'
SELECT pgcrypt_at_rest.rotate_keyring('patients') AS new_key_id;
INSERT INTO patients VALUES (3, pgcrypt_at_rest.encrypt('Grace Hopper', 'patients'), NULL);
