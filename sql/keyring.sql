--
-- Keyrings, rotation, the views, privileges and the key cache
--
\df pgcrypt_at_rest.*

-- this server was registered by CREATE EXTENSION
SELECT count(*) AS servers,
	   bool_and(public_key = pgcrypt_at_rest.server_public_key()) AS is_this_server,
	   octet_length(pgcrypt_at_rest.server_public_key()) AS public_key_bytes
  FROM pgcrypt_at_rest.servers;

-- named after cluster_name (unset here) and its public key's fingerprint
SELECT name = 'server ' || left(encode(public_key, 'hex'), 8) AS fingerprint_name FROM pgcrypt_at_rest.servers;

-- server rows as a restore loads them: this server's own row is skipped, and
-- another key's row whose name is taken is renamed rather than failing
INSERT INTO pgcrypt_at_rest.server (public_key, name)
	SELECT public_key, name || ' dumped' FROM pgcrypt_at_rest.server;
INSERT INTO pgcrypt_at_rest.server (public_key, name)
	SELECT ('\x' || repeat('ab', 32))::bytea, name FROM pgcrypt_at_rest.server;
SELECT count(*) AS servers, count(DISTINCT name) AS names,
	   count(*) FILTER (WHERE name LIKE '% (' || repeat('ab', 32) || ')') AS renamed
  FROM pgcrypt_at_rest.servers;
DELETE FROM pgcrypt_at_rest.server WHERE public_key = ('\x' || repeat('ab', 32))::bytea;

-- create_keyring returns the new keyring's first (active) key
SELECT pgcrypt_at_rest.create_keyring('pii') AS pii_key \gset
SELECT key_id = :pii_key AS returned_id, keyring, generation, status,
	   deprecated_at IS NULL AS not_deprecated, destroyed_at IS NULL AS not_destroyed,
	   sealed_copies
  FROM pgcrypt_at_rest.keys WHERE keyring = 'pii';
SELECT name, active_key_id = :pii_key AS active_is_first, deprecated_keys
  FROM pgcrypt_at_rest.keyrings WHERE name = 'pii';

-- the key material is stored only sealed: 32 bytes + 48 of seal overhead
SELECT octet_length(sealed) AS sealed_bytes, server_public_key = pgcrypt_at_rest.server_public_key() AS for_this_server
  FROM pgcrypt_at_rest.sealed_key WHERE key_id = :pii_key;

-- bad names
SELECT pgcrypt_at_rest.create_keyring('pii');
SELECT pgcrypt_at_rest.create_keyring('');
SELECT pgcrypt_at_rest.create_keyring(repeat('k', 64));
SELECT pgcrypt_at_rest.create_keyring(repeat('k', 63)) > 0 AS longest_name_ok;
SELECT pgcrypt_at_rest.create_keyring(NULL) IS NULL AS null_name;
SELECT pgcrypt_at_rest.rotate_keyring('no such keyring');
SELECT pgcrypt_at_rest.encrypt('x', 'no such keyring');
SELECT pgcrypt_at_rest.encrypt('x', repeat('k', 64));
SELECT sqlstate_of($$SELECT pgcrypt_at_rest.create_keyring('pii')$$);
SELECT sqlstate_of($$SELECT pgcrypt_at_rest.create_keyring('')$$);
SELECT sqlstate_of($$SELECT pgcrypt_at_rest.rotate_keyring('nope')$$);
SELECT sqlstate_of($$SELECT pgcrypt_at_rest.encrypt('x', 'nope')$$);

-- a new name has no control character and no white space at either end, so
-- 'pii', 'pii ' and E'pii\t' cannot be three keyrings; inside, space is fine
SELECT pgcrypt_at_rest.create_keyring(E'pii\t');
SELECT pgcrypt_at_rest.create_keyring(E'p\nii');
SELECT pgcrypt_at_rest.create_keyring('pii ');
SELECT pgcrypt_at_rest.create_keyring(' pii');
SELECT pgcrypt_at_rest.create_keyring(E'pii\x7f');
SELECT sqlstate_of($$SELECT pgcrypt_at_rest.create_keyring('pii ')$$);
SELECT pgcrypt_at_rest.create_keyring('two words') > 0 AS inner_space_ok;
SELECT count(*) AS keyrings_named_pii FROM pgcrypt_at_rest.keyrings WHERE name LIKE '%pii%';
-- a name from before the rule (loaded as a restore would) still works
INSERT INTO pgcrypt_at_rest.keyring (name) VALUES ('legacy ');
SELECT pgcrypt_at_rest.rotate_keyring('legacy ') > 0 AS legacy_rotated;
SELECT pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('x', 'legacy ')) AS legacy_round_trip;

-- rotation: a new active key, the previous one deprecated but readable
CREATE TABLE people (id int, ssn pgcrypt_at_rest.encrypted);
INSERT INTO people VALUES (1, pgcrypt_at_rest.encrypt('111-11-1111', 'pii'));
SELECT pgcrypt_at_rest.rotate_keyring('pii') AS pii_key2 \gset
SELECT :pii_key2 <> :pii_key AS new_id,
	   (SELECT generation FROM pgcrypt_at_rest.keys WHERE key_id = :pii_key2) AS generation;
INSERT INTO people VALUES (2, pgcrypt_at_rest.encrypt('222-22-2222', 'pii'));
SELECT id, pgcrypt_at_rest.key_id(ssn) = :pii_key AS old_key, pgcrypt_at_rest.key_id(ssn) = :pii_key2 AS new_key,
	   pgcrypt_at_rest.decrypt_text(ssn) AS ssn
  FROM people ORDER BY id;
SELECT generation, key_id = :pii_key2 AS is_new, status, deprecated_at IS NOT NULL AS has_deprecated_at
  FROM pgcrypt_at_rest.keys WHERE keyring = 'pii' ORDER BY generation;
SELECT active_key_id = :pii_key2 AS active_is_new, deprecated_keys
  FROM pgcrypt_at_rest.keyrings WHERE name = 'pii';
-- the deprecated key stays valid for decrypting only: one active key per keyring
SELECT count(*) FILTER (WHERE status = 'active') AS active_keys FROM pgcrypt_at_rest.keys WHERE keyring = 'pii';

-- a rotation rolled back leaves this backend's cache on the old active key
BEGIN;
SELECT pgcrypt_at_rest.rotate_keyring('pii') AS pii_key3 \gset
SELECT pgcrypt_at_rest.key_id(pgcrypt_at_rest.encrypt('x', 'pii')) = :pii_key3 AS sees_own_rotation;
ROLLBACK;
SELECT pgcrypt_at_rest.key_id(pgcrypt_at_rest.encrypt('x', 'pii')) = :pii_key2 AS back_to_committed_key;
SELECT count(*) AS keys_after_rollback FROM pgcrypt_at_rest.keys WHERE keyring = 'pii';

-- keyrings are independent
SELECT pgcrypt_at_rest.create_keyring('payments') AS pay_key \gset
SELECT pgcrypt_at_rest.key_id(pgcrypt_at_rest.encrypt('x', 'payments')) = :pay_key AS payments_key,
	   pgcrypt_at_rest.key_id(pgcrypt_at_rest.encrypt('x', 'pii')) = :pii_key2 AS pii_unchanged;

-- privileges: the key tables are closed to PUBLIC; key use is granted explicitly
SELECT c.relname, has_table_privilege('public', c.oid, 'SELECT') AS public_select,
	   has_table_privilege('public', c.oid, 'INSERT, UPDATE, DELETE') AS public_write
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'pgcrypt_at_rest' AND c.relkind IN ('r', 'v', 'S') ORDER BY 1;
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'pgcrypt_at_rest' ORDER BY 1::text;

CREATE ROLE regress_reader;
CREATE ROLE regress_app;
GRANT SELECT ON people TO regress_reader, regress_app;
GRANT EXECUTE ON FUNCTION pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypted),
	pgcrypt_at_rest.encrypt(text, text) TO regress_app;
SET ROLE regress_reader;
SELECT count(*) AS reader_sees_rows, bool_and(ssn::text LIKE 'enc:%') AS only_ciphertext FROM people;
SELECT pgcrypt_at_rest.decrypt_text(ssn) FROM people;
SELECT pgcrypt_at_rest.encrypt('x', 'pii');
SELECT * FROM pgcrypt_at_rest.sealed_key;
SELECT * FROM pgcrypt_at_rest.keys;
SELECT pgcrypt_at_rest.rotate_keyring('pii');
RESET ROLE;
-- a new backend, so the keys are loaded from the tables as regress_app
\c
SET ROLE regress_app;
-- a granted role decrypts without any right on the key tables
SELECT id, pgcrypt_at_rest.decrypt_text(ssn) FROM people ORDER BY id;
SELECT pgcrypt_at_rest.key_id(pgcrypt_at_rest.encrypt('x', 'pii')) = :pii_key2 AS app_encrypts;
SELECT * FROM pgcrypt_at_rest.data_key;
SELECT pgcrypt_at_rest.create_keyring('mine');
RESET ROLE;
DROP TABLE people;
DROP OWNED BY regress_reader, regress_app;
DROP ROLE regress_reader, regress_app;

-- in a UTF8 database, Unicode white space and C1 controls are refused too
\set regress_db :DBNAME
CREATE DATABASE regress_pcar_names ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c regress_pcar_names
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring(E'pii\u00a0');
SELECT pgcrypt_at_rest.create_keyring(E'\u3000pii');
SELECT pgcrypt_at_rest.create_keyring(E'pi\u0085i');
SELECT pgcrypt_at_rest.create_keyring(E'p\u00efi') > 0 AS accented_ok;
\c :regress_db
DROP DATABASE regress_pcar_names;
