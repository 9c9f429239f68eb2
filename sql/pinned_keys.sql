--
-- Values that pin a key: a forged value (a real value's header, zeros where
-- its ciphertext and tag were) or a value under a context no one declared
-- cannot be re-encrypted, so drain() leaves it and destroy_drained_keys()
-- keeps its key.  rows_under_key() lists where such values are, and
-- destroy_key() destroys the key anyway once told how many values that
-- makes unreadable.  In a database of its own, so that the keys listed are
-- this test's (the worker is paused: worker_enabled = off, destroy_grace = 0).
--
-- the helpers of type_io.sql, copied from this test's first database
SELECT string_agg(pg_get_functiondef(p.oid), E';\n' ORDER BY p.oid) || ';' AS error_helpers
  FROM pg_proc p
 WHERE p.pronamespace = 'public'::regnamespace AND p.proname IN ('masked', 'sqlstate_of', 'error_of') \gset
\set regress_db :DBNAME
CREATE DATABASE regress_pcar_pinned;
\c regress_pcar_pinned
CREATE EXTENSION pgcrypt_at_rest;
:error_helpers
-- the id column of the row at a tid, to show rows_under_key()'s rows by id
CREATE FUNCTION row_id(t regclass, tid tid) RETURNS int LANGUAGE plpgsql STRICT AS $$
DECLARE
	id int;
BEGIN
	EXECUTE format('SELECT id FROM %s WHERE ctid = $1', t) INTO id USING tid;
	RETURN id;
END
$$;
CREATE FUNCTION forge(v pgcrypt_at_rest.encrypted) RETURNS pgcrypt_at_rest.encrypted
	LANGUAGE sql STRICT AS $$
	SELECT pgcrypt_at_rest.encrypted(overlay(v::bytea
		placing decode(repeat('00', octet_length(v::bytea) - 29), 'hex') from 30))
$$;

SELECT pgcrypt_at_rest.create_keyring('pin') AS key1 \gset
CREATE TYPE pin_pair AS (a pgcrypt_at_rest.encrypted, b pgcrypt_at_rest.encrypted[]);
CREATE DOMAIN pin_secret AS pgcrypt_at_rest.encrypted;
CREATE TABLE cards (id int PRIMARY KEY, v pgcrypt_at_rest.encrypted);
CREATE TABLE bundles (id int PRIMARY KEY, vs pgcrypt_at_rest.encrypted[], pair pin_pair, d pin_secret[]);
INSERT INTO cards SELECT i, pgcrypt_at_rest.encrypt('card ' || i, 'pin') FROM generate_series(1, 5) i;
-- a forged value: well-formed, naming the key, opened by no key
INSERT INTO cards SELECT 6, forge(v) FROM cards WHERE id = 1;
-- a value under a context the column does not declare
INSERT INTO cards VALUES (7, pgcrypt_at_rest.encrypt('card 7', 'pin', int4send(7)));
-- forged values nested among real ones: each counts
INSERT INTO bundles
SELECT 1, ARRAY[forge(e1), e2, forge(e3)], ROW(forge(e1), ARRAY[e2, forge(e3)])::pin_pair,
	   ARRAY[e1, NULL]::pin_secret[]
  FROM (SELECT pgcrypt_at_rest.encrypt('b1', 'pin') AS e1, pgcrypt_at_rest.encrypt('b2', 'pin') AS e2,
			   pgcrypt_at_rest.encrypt('b3', 'pin') AS e3) AS e;
INSERT INTO bundles
SELECT 2, ARRAY[pgcrypt_at_rest.encrypt('b4', 'pin')], NULL, ARRAY[forge(pgcrypt_at_rest.encrypt('b5', 'pin'))]::pin_secret[];
SELECT pgcrypt_at_rest.key_id(v) = :key1 AS under_key1,
	   pgcrypt_at_rest.decrypt_text(v) AS plaintext FROM cards WHERE id = 1;
SELECT sqlstate_of('SELECT pgcrypt_at_rest.decrypt(v) FROM cards WHERE id = 6') AS forged_does_not_open;

-- before the rotation every value is under the key
SELECT table_name, column_name, row_id(table_name, ctid) AS id, value_count
  FROM pgcrypt_at_rest.rows_under_key(:key1) ORDER BY table_name::text, column_name, id;

-- the drain re-encrypts what it can open; the rest pins the key
SELECT pgcrypt_at_rest.rotate_keyring('pin') AS key2 \gset
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT table_name, column_name, remaining, reencrypted, unrotatable, unrotatable_reason IS NOT NULL AS has_reason
  FROM pgcrypt_at_rest.rotation_status WHERE key_id = :key1 ORDER BY table_name::text, column_name;
SELECT pgcrypt_at_rest.destroy_drained_keys() AS destroyed;
SELECT key_id = :key1 AS key1, status FROM pgcrypt_at_rest.keys ORDER BY generation;

-- rows_under_key() lists exactly those rows, and how many values each holds
SELECT table_name, column_name, row_id(table_name, ctid) AS id, value_count
  FROM pgcrypt_at_rest.rows_under_key(:key1) ORDER BY table_name::text, column_name, id;
SELECT count(*) AS rows_under_key2, sum(value_count) AS values_under_key2
  FROM pgcrypt_at_rest.rows_under_key(:key2);
-- any id, even one no key ever had: it reads headers only
SELECT count(*) AS rows_under_unknown_key FROM pgcrypt_at_rest.rows_under_key(424242);
SELECT count(*) AS rows_under_null FROM pgcrypt_at_rest.rows_under_key(NULL);

-- destroy_key(): refused without the count, or with another one
SELECT error_of(format('SELECT pgcrypt_at_rest.destroy_key(%s)', :key1));
SELECT error_of(format('SELECT pgcrypt_at_rest.destroy_key(%s, unreadable_values => 6)', :key1));
SELECT pgcrypt_at_rest.destroy_key(:key1, -1);
-- refused for an active, an unknown, a NULL key
SELECT error_of(format('SELECT pgcrypt_at_rest.destroy_key(%s, 0)', :key2));
SELECT pgcrypt_at_rest.destroy_key(424242);
SELECT pgcrypt_at_rest.destroy_key(NULL, 7);
-- the preconditions of destroy_drained_keys(): READ COMMITTED, nothing written yet
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgcrypt_at_rest.destroy_key(:key1, 7);
ROLLBACK;
BEGIN;
INSERT INTO cards VALUES (100, NULL);
SELECT pgcrypt_at_rest.destroy_key(:key1, 7);
ROLLBACK;
-- a key restored from a dump is held until the restore is confirmed
UPDATE pgcrypt_at_rest.data_key SET installation = NULL WHERE id = :key1;
SELECT error_of(format('SELECT pgcrypt_at_rest.destroy_key(%s, 7)', :key1));
SELECT pgcrypt_at_rest.confirm_restore();
SELECT key_id = :key1 AS key1, status FROM pgcrypt_at_rest.keys ORDER BY generation;

-- only for those granted it
CREATE ROLE regress_pinned_nobody;
SET ROLE regress_pinned_nobody;
SELECT * FROM pgcrypt_at_rest.rows_under_key(:key1);
SELECT pgcrypt_at_rest.destroy_key(:key1, 7);
RESET ROLE;
DROP ROLE regress_pinned_nobody;
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p
 WHERE p.proname IN ('rows_under_key', 'destroy_key') ORDER BY p.proname;

-- with the count, or more (a bound: forged values inserted meanwhile cannot
-- make every call miss): destroyed, said loudly, in the caller's transaction
-- (rolled back, nothing happened); it returns how many values it counted.
-- The WARNING's text names the key, whose id differs at every run: only its
-- severity and SQLSTATE are shown (t/027 checks its words).
\set VERBOSITY sqlstate
BEGIN;
SELECT pgcrypt_at_rest.destroy_key(:key1, unreadable_values => 7) AS made_unreadable;
ROLLBACK;
\set VERBOSITY default
SELECT status, sealed_copies FROM pgcrypt_at_rest.keys WHERE key_id = :key1;
\set VERBOSITY sqlstate
SELECT pgcrypt_at_rest.destroy_key(:key1, unreadable_values => 10) AS made_unreadable;
\set VERBOSITY default
SELECT status, sealed_copies, destroyed_at IS NOT NULL AS has_destroyed_at,
	   drained_at IS NULL AS never_drained
  FROM pgcrypt_at_rest.keys WHERE key_id = :key1;
SELECT count(*) AS progress_left FROM pgcrypt_at_rest.rotation_status WHERE key_id = :key1;
-- the error detail carries the time of destruction: the message only
SELECT sqlstate_of('SELECT pgcrypt_at_rest.decrypt_text(v) FROM cards WHERE id = 6') AS forged,
	   sqlstate_of('SELECT pgcrypt_at_rest.decrypt_text(v, int4send(7)) FROM cards WHERE id = 7') AS undeclared_context;
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'card ' || id) AS still_readable
  FROM cards WHERE id <= 5;
-- the rows are still there, listed under the destroyed key
SELECT count(*) AS rows_under_destroyed_key, sum(value_count) AS values_under_destroyed_key
  FROM pgcrypt_at_rest.rows_under_key(:key1);
SELECT error_of(format('SELECT pgcrypt_at_rest.destroy_key(%s, 7)', :key1));

--
-- Columns that cannot be read (a temporary table, a foreign table) may hold
-- values under any key: they are listed without a row, and destroy_key()
-- needs the caller's word even when it counts none.
--
DELETE FROM cards WHERE id IN (6, 7);
DELETE FROM bundles;
CREATE TEMP TABLE stash (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO stash SELECT id, v FROM cards WHERE id = 1;
CREATE FOREIGN DATA WRAPPER pinned_fdw;
CREATE SERVER pinned_server FOREIGN DATA WRAPPER pinned_fdw;
CREATE FOREIGN TABLE remote (id int, v pgcrypt_at_rest.encrypted) SERVER pinned_server;
SELECT pgcrypt_at_rest.rotate_keyring('pin') AS key3 \gset
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT pgcrypt_at_rest.destroy_drained_keys() AS destroyed;
SELECT table_name, column_name, ctid, value_count
  FROM pgcrypt_at_rest.rows_under_key(:key2) ORDER BY table_name::text, column_name;
SELECT error_of(format('SELECT pgcrypt_at_rest.destroy_key(%s)', :key2));
-- and with a forged value under it too, both are said, and 0 is too few
INSERT INTO cards SELECT 8, forge(v) FROM stash;
SELECT table_name, column_name, row_id(table_name, ctid) AS id, value_count
  FROM pgcrypt_at_rest.rows_under_key(:key2) ORDER BY table_name::text, column_name;
SELECT error_of(format('SELECT pgcrypt_at_rest.destroy_key(%s, 0)', :key2));
\set VERBOSITY sqlstate
SELECT pgcrypt_at_rest.destroy_key(:key2, 1) AS made_unreadable;
\set VERBOSITY default
SELECT generation, key_id = :key1 AS key1, key_id = :key2 AS key2, status FROM pgcrypt_at_rest.keys ORDER BY generation;
SELECT sqlstate_of('SELECT pgcrypt_at_rest.decrypt_text(v) FROM stash') AS stashed;
DROP TABLE stash;
DROP FOREIGN TABLE remote;

-- a deprecated key nothing needs is just destroyed early, without a word
SELECT pgcrypt_at_rest.rotate_keyring('pin') AS key4 \gset
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT pgcrypt_at_rest.destroy_key(:key3) AS made_unreadable;
SELECT generation, key_id = :key3 AS key3, status, drained_at IS NOT NULL AS drained
  FROM pgcrypt_at_rest.keys ORDER BY generation;
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'card ' || id) AS still_readable
  FROM cards WHERE id <= 5;

\c :regress_db
-- as in upgrade.sql: once this database's (paused) worker is connected, DROP
-- DATABASE asks it to leave
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		PERFORM pg_stat_clear_snapshot();
		PERFORM FROM pg_stat_activity
		  WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'regress_pcar_pinned';
		EXIT WHEN FOUND;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
DROP DATABASE regress_pcar_pinned;
