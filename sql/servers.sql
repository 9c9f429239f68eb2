--
-- Servers join and leave: add_server() seals every live key for a new
-- public key; remove_server() deletes a server's copies and replaces the
-- active key of every keyring it could open.  In a database of its own,
-- so that key ids are this test's.  The second server here is only a
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
SELECT pgcrypt_at_rest.destroy_drained_keys() AS destroyed;
SELECT key_id, keyring, status, sealed_copies FROM pgcrypt_at_rest.keys ORDER BY key_id;

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
SELECT key_id, status, sealed_copies FROM pgcrypt_at_rest.keys ORDER BY key_id;
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
-- the spare leaves: its copies go, each keyring gets an active key it cannot open
SELECT active_key_id AS alpha_before FROM pgcrypt_at_rest.keyrings WHERE name = 'alpha' \gset
SELECT pgcrypt_at_rest.remove_server('spare') AS keys_it_held;
SELECT name, this_server, live_keys_held, live_keys_missing FROM pgcrypt_at_rest.servers;
SELECT name, active_key_id > :alpha_before AS new_active_key FROM pgcrypt_at_rest.keyrings ORDER BY name;
SELECT key_id, status, sealed_copies FROM pgcrypt_at_rest.keys ORDER BY key_id;
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
SELECT key_id, status, sealed_copies FROM pgcrypt_at_rest.keys WHERE status <> 'destroyed' ORDER BY key_id;
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
