--
-- Upgrading from 1.0 through each later version keeps every key and value,
-- and a database with the extension can be dropped although a rotation
-- worker is connected to it.
--
\set regress_db :DBNAME
CREATE DATABASE regress_pcar_upgrade;
\c regress_pcar_upgrade
CREATE EXTENSION pgcrypt_at_rest VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'pgcrypt_at_rest';
SELECT pgcrypt_at_rest.create_keyring('old') > 0 AS created;
CREATE TABLE kept AS SELECT i, pgcrypt_at_rest.encrypt('kept ' || i, 'old') AS v FROM generate_series(1, 20) i;
SELECT pgcrypt_at_rest.rotate_keyring('old') > 0 AS rotated;
ALTER EXTENSION pgcrypt_at_rest UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'pgcrypt_at_rest';
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'kept ' || i) AS decrypts FROM kept;
-- keys still work at 1.1; rotation waits for the objects of this library's version
SELECT pgcrypt_at_rest.rotate_keyring('old') > 0 AS rotated;
SELECT pgcrypt_at_rest.drain() AS reencrypted;
-- declarations as 1.1 stored them, by owner name; one for a role since dropped
CREATE TABLE declared (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO pgcrypt_at_rest.column_context VALUES
	('public', 'declared', 'v', 'pg_catalog.int4send(id)', current_user),
	('public', 'orphaned', 'v', 'pg_catalog.int4send(id)', 'regress_no_such_role');
ALTER EXTENSION pgcrypt_at_rest UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'pgcrypt_at_rest';
-- keys made before the upgrade are this database's own: not held as restored
SELECT keyring, status, encryptions, drained_at, restored FROM pgcrypt_at_rest.keys ORDER BY key_id;
-- owners are roles now; a declaration for a role that is gone could never run again
SELECT table_name, pg_typeof(table_owner), table_owner = current_user::regrole AS declared_for_me
  FROM pgcrypt_at_rest.column_context;
-- 1.2 waits for 1.3's objects before anything rotates
SELECT pgcrypt_at_rest.drain() AS reencrypted;
-- a grant on alter_keyring() survives its new signature
CREATE ROLE regress_keyring_admin;
GRANT EXECUTE ON FUNCTION pgcrypt_at_rest.alter_keyring(text, interval, bigint) TO regress_keyring_admin;
ALTER EXTENSION pgcrypt_at_rest UPDATE TO '1.3';
SELECT has_function_privilege('regress_keyring_admin',
	'pgcrypt_at_rest.alter_keyring(text, interval, bigint, integer)', 'EXECUTE') AS grant_kept,
	   has_function_privilege('public',
	'pgcrypt_at_rest.alter_keyring(text, interval, bigint, integer)', 'EXECUTE') AS public_execute;
REVOKE ALL ON FUNCTION pgcrypt_at_rest.alter_keyring(text, interval, bigint, integer) FROM regress_keyring_admin;
DROP ROLE regress_keyring_admin;
SELECT extversion FROM pg_extension WHERE extname = 'pgcrypt_at_rest';
-- 1.3 still numbers keys from its sequence, and waits for 1.4 before anything rotates
SELECT pgcrypt_at_rest.rotate_keyring('old') < 16777216 AS serial_id;
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT string_agg(key_id::text, ',' ORDER BY key_id) AS ids_before FROM pgcrypt_at_rest.keys \gset
ALTER EXTENSION pgcrypt_at_rest UPDATE TO '1.4';
SELECT extversion FROM pg_extension WHERE extname = 'pgcrypt_at_rest';
-- keys made before keep their ids; their generations follow the order they were made in
SELECT string_agg(key_id::text, ',' ORDER BY key_id) = :'ids_before' AS ids_kept FROM pgcrypt_at_rest.keys;
SELECT generation, status, key_id < 16777216 AS serial_id FROM pgcrypt_at_rest.keys ORDER BY generation;
SELECT bool_and(k.generation = o.n) AS generation_follows_serial_ids
  FROM pgcrypt_at_rest.keys k
  JOIN (SELECT key_id, row_number() OVER (ORDER BY key_id) AS n FROM pgcrypt_at_rest.keys) o USING (key_id);
-- a key made now has a random id, and is the newest generation
SELECT pgcrypt_at_rest.rotate_keyring('old') AS new_key \gset
SELECT key_id >= 16777216 AS random_id, generation FROM pgcrypt_at_rest.keys WHERE key_id = :new_key;
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'kept ' || i) AS decrypts FROM kept;
-- policies say when they are due and what they wait for
SELECT pgcrypt_at_rest.alter_keyring('old', '1 second', NULL);
SELECT pg_sleep(1.1);
SELECT name, policy_due, policy_waits_for_key IS NOT NULL AS policy_waits FROM pgcrypt_at_rest.keyrings;
SELECT pgcrypt_at_rest.alter_keyring('old', NULL, NULL);
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT pgcrypt_at_rest.destroy_drained_keys() AS destroyed;
SELECT generation, status FROM pgcrypt_at_rest.keys ORDER BY generation;
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'kept ' || i) AS decrypts FROM kept;
-- what the extension owns after the upgrade
SELECT pg_describe_object(classid, objid, 0) AS object
  FROM pg_depend WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgcrypt_at_rest')
   AND deptype = 'e' ORDER BY 1;
\c :regress_db
-- CREATE EXTENSION woke the launcher: a worker (paused here) connects there
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		PERFORM pg_stat_clear_snapshot();
		PERFORM FROM pg_stat_activity
		  WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'regress_pcar_upgrade';
		EXIT WHEN FOUND;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT count(*) AS workers_connected FROM pg_stat_activity
 WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'regress_pcar_upgrade';
-- DROP DATABASE asks it to leave first
DROP DATABASE regress_pcar_upgrade;
