--
-- Servers join and leave: add_server() seals every live key for a new
-- public key; remove_server() deletes a server's copies and replaces the
-- active key of every keyring it could open.  In a database of its own,
-- so that the keys listed are this test's.  The second server here is only a
-- public key (its secret exists nowhere): enough to see what is sealed.
--
\set regress_db :DBNAME
CREATE DATABASE regress_pcar_servers;
\c regress_pcar_servers
CREATE EXTENSION pgcrypt_at_rest;
-- this server's name ends with its public key's fingerprint: a fixed one here
UPDATE pgcrypt_at_rest.server SET name = 'here';
SELECT pgcrypt_at_rest.create_keyring('alpha') AS alpha_key \gset
SELECT pgcrypt_at_rest.create_keyring('beta') AS beta_key \gset
SELECT pgcrypt_at_rest.rotate_keyring('beta') AS beta_key2 \gset
SELECT pgcrypt_at_rest.create_keyring('gamma') AS gamma_key \gset
SELECT pgcrypt_at_rest.deprecate_key(:gamma_key);
CREATE TABLE t AS SELECT i, pgcrypt_at_rest.encrypt('t' || i, 'alpha') AS v FROM generate_series(1, 5) i;
SELECT pgcrypt_at_rest.drain() AS drained;
SELECT pgcrypt_at_rest.destroy_drained_keys() = ARRAY[:beta_key, :gamma_key] AS destroyed_beta_1_and_gamma_1;
SELECT keyring, generation, status, sealed_copies FROM pgcrypt_at_rest.keys ORDER BY keyring, generation;

-- one server, this one, holding every live key
SELECT name, this_server, live_keys_held, live_keys_missing FROM pgcrypt_at_rest.servers;

-- refused: wrong lengths, points of small order, taken names and keys, NULLs
SELECT pgcrypt_at_rest.add_server('short', '\x0102');
SELECT pgcrypt_at_rest.add_server('zero', decode(repeat('00', 32), 'hex'));
SELECT pgcrypt_at_rest.add_server('one', decode('01' || repeat('00', 31), 'hex'));
SELECT pgcrypt_at_rest.add_server('twin', pgcrypt_at_rest.server_public_key());
SELECT pgcrypt_at_rest.add_server(name, decode(md5('a') || md5('b'), 'hex'))
  FROM pgcrypt_at_rest.servers;
SELECT pgcrypt_at_rest.add_server(NULL, decode(md5('a') || md5('b'), 'hex'));
SELECT pgcrypt_at_rest.add_server('spare', NULL);
SELECT pgcrypt_at_rest.add_server(' spare', decode(md5('a') || md5('b'), 'hex'));
SELECT pgcrypt_at_rest.add_server(E'sp\nare', decode(md5('a') || md5('b'), 'hex'));
SELECT count(*) AS servers FROM pgcrypt_at_rest.servers;

-- a second server: every live key (active and deprecated, not destroyed) sealed for it
SELECT pgcrypt_at_rest.add_server('spare', decode(md5('a') || md5('b'), 'hex')) AS sealed;
SELECT name, this_server, live_keys_held, live_keys_missing
  FROM pgcrypt_at_rest.servers ORDER BY this_server, name;
SELECT keyring, generation, status, sealed_copies FROM pgcrypt_at_rest.keys ORDER BY keyring, generation;
-- calling it twice is an error, not a silent no-op
SELECT pgcrypt_at_rest.add_server('spare', decode(md5('a') || md5('b'), 'hex'));
SELECT pgcrypt_at_rest.add_server('spare2', decode(md5('a') || md5('b'), 'hex'));
-- keys made from now on are sealed to both
SELECT pgcrypt_at_rest.rotate_keyring('alpha') AS alpha_key2 \gset
SELECT sealed_copies FROM pgcrypt_at_rest.keys WHERE key_id = :alpha_key2;
-- values still decrypt here
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 't' || i) AS decrypts FROM t;

-- leaving: not this server, not an unknown one
SELECT pgcrypt_at_rest.remove_server(name) FROM pgcrypt_at_rest.servers WHERE this_server;
SELECT pgcrypt_at_rest.remove_server('nope');
SELECT pgcrypt_at_rest.remove_server(NULL);
-- nor one holding a key no other server holds: its values would be lost
-- (this server's copy of alpha's key deleted for the test, then rolled back;
-- terse, as the detail names the key)
BEGIN;
DELETE FROM pgcrypt_at_rest.sealed_key
 WHERE key_id = :alpha_key2 AND server_public_key = pgcrypt_at_rest.server_public_key();
\set VERBOSITY terse
SELECT pgcrypt_at_rest.remove_server('spare');
\set VERBOSITY default
ROLLBACK;
SELECT count(*) AS servers FROM pgcrypt_at_rest.servers;
-- the spare leaves: its copies go, each keyring gets an active key it cannot open
CREATE TABLE active_before AS SELECT name, active_key_id FROM pgcrypt_at_rest.keyrings;
SELECT pgcrypt_at_rest.remove_server('spare') AS keys_it_held;
SELECT name, this_server, live_keys_held, live_keys_missing FROM pgcrypt_at_rest.servers;
SELECT r.name, r.active_key_id IS DISTINCT FROM b.active_key_id AS new_active_key, k.generation
  FROM pgcrypt_at_rest.keyrings r JOIN active_before b USING (name)
  JOIN pgcrypt_at_rest.keys k ON k.key_id = r.active_key_id
 ORDER BY name;
SELECT keyring, generation, status, sealed_copies FROM pgcrypt_at_rest.keys ORDER BY keyring, generation;
-- the deprecated keys drain as after any rotation
SELECT pgcrypt_at_rest.drain() AS drained;
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 't' || i) AS decrypts,
	   count(DISTINCT pgcrypt_at_rest.key_id(v)) AS keys
  FROM t;
-- the last server cannot leave
SELECT pgcrypt_at_rest.remove_server(name) FROM pgcrypt_at_rest.servers;

-- moving to a new secret: sealed for the new key too, until completed
-- (t/024 restarts a server with its new secret; here, the surface)
SELECT pgcrypt_at_rest.replace_server_key('nope', decode(md5('c') || md5('d'), 'hex'));
SELECT pgcrypt_at_rest.replace_server_key('here', decode(repeat('00', 32), 'hex'));
SELECT pgcrypt_at_rest.replace_server_key('here', pgcrypt_at_rest.server_public_key());
SELECT pgcrypt_at_rest.replace_server_key('here', NULL);
SELECT pgcrypt_at_rest.complete_server_key_replacement('here');
SELECT pgcrypt_at_rest.replace_server_key('here', decode(md5('c') || md5('d'), 'hex')) AS sealed;
SELECT name, this_server, pending_public_key = decode(md5('c') || md5('d'), 'hex') AS pending,
	   pending_since IS NOT NULL AS since
  FROM pgcrypt_at_rest.servers;
SELECT keyring, generation, status, sealed_copies FROM pgcrypt_at_rest.keys WHERE status <> 'destroyed'
 ORDER BY keyring, generation;
SELECT pgcrypt_at_rest.replace_server_key('here', decode(md5('e') || md5('f'), 'hex'));
SELECT pgcrypt_at_rest.add_server('spare', decode(md5('c') || md5('d'), 'hex'));
SELECT pgcrypt_at_rest.complete_server_key_replacement('here');
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 't' || i) AS decrypts FROM t;

-- for the key administrator only
CREATE ROLE regress_server_tenant;
SET ROLE regress_server_tenant;
SELECT pgcrypt_at_rest.add_server('spare', decode(md5('a') || md5('b'), 'hex'));
SELECT pgcrypt_at_rest.remove_server('spare');
SELECT pgcrypt_at_rest.replace_server_key('here', decode(md5('e') || md5('f'), 'hex'));
SELECT pgcrypt_at_rest.complete_server_key_replacement('here');
RESET ROLE;
DROP ROLE regress_server_tenant;

\c :regress_db
DROP DATABASE regress_pcar_servers;
