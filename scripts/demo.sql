\echo '-- the extension registers this server by its public key'
CREATE EXTENSION pgcrypt_at_rest;
SELECT name, encode(public_key, 'hex') AS public_key FROM pgcrypt_at_rest.servers;

\echo '-- a keyring with its first active key'
SELECT pgcrypt_at_rest.create_keyring('patients') AS first_key_id;

CREATE TABLE patients (
	id integer PRIMARY KEY,
	name pgcrypt_at_rest.encrypted NOT NULL,
	diagnosis pgcrypt_at_rest.encrypted
);

\echo '-- insert rows: values are encrypted before they reach the table'
INSERT INTO patients VALUES
	(1, pgcrypt_at_rest.encrypt('Ada Lovelace', 'patients'),
		pgcrypt_at_rest.encrypt('migraine', 'patients', '1'::bytea)),
	(2, pgcrypt_at_rest.encrypt('Alan Turing', 'patients'),
		pgcrypt_at_rest.encrypt('hay fever', 'patients', '2'::bytea));

\echo '-- what the table holds'
SELECT id, name, pgcrypt_at_rest.key_id(name) AS key_id FROM patients ORDER BY id;

\echo '-- read back, decrypted (the diagnosis is bound to its row id as context)'
SELECT id,
	   pgcrypt_at_rest.decrypt_text(name) AS name,
	   pgcrypt_at_rest.decrypt_text(diagnosis, id::text::bytea) AS diagnosis
  FROM patients ORDER BY id;

\echo '-- a value moved to another row does not decrypt there. Expected: decrypting row 1''s'
\echo '-- diagnosis with row 2''s context fails with "could not decrypt a value under key N"'
DO $$
BEGIN
	PERFORM pgcrypt_at_rest.decrypt_text(diagnosis, '2'::bytea) FROM patients WHERE id = 1;
	RAISE EXCEPTION 'row 1''s diagnosis decrypted with row 2''s context: this is a bug';
EXCEPTION WHEN SQLSTATE '22000' THEN  -- could not decrypt a value
	RAISE NOTICE 'as expected: %', SQLERRM;
END
$$;

\echo '-- the background workers'
SELECT backend_type, datname FROM pg_stat_activity
 WHERE backend_type LIKE 'pgcrypt_at_rest%' ORDER BY 1;

\echo '-- rotate: the diagnosis column takes its context from the row id'
SELECT pgcrypt_at_rest.set_column_context('patients', 'diagnosis', 'pg_catalog.convert_to(id::text, ''UTF8'')');
SELECT pgcrypt_at_rest.rotate_keyring('patients') AS new_key_id;
INSERT INTO patients VALUES (3, pgcrypt_at_rest.encrypt('Grace Hopper', 'patients'), NULL);

