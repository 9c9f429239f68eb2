--
-- Rotation: deprecate_key, alter_keyring, set_column_context, drain(),
-- destroy_drained_keys() and rotation_status.  The worker is paused in this
-- cluster (worker_enabled = off, destroy_grace = 0); these functions run the
-- same code in the session.
--
SELECT pgcrypt_at_rest.create_keyring('rot') AS rot_key1 \gset

-- the policy of a keyring
SELECT pgcrypt_at_rest.alter_keyring('rot', '90 days', 1000000);
SELECT name, rotate_after, max_encryptions FROM pgcrypt_at_rest.keyrings WHERE name = 'rot';
SELECT pgcrypt_at_rest.alter_keyring('rot', NULL, NULL);
SELECT name, rotate_after, max_encryptions FROM pgcrypt_at_rest.keyrings WHERE name = 'rot';
SELECT pgcrypt_at_rest.alter_keyring('nope', NULL, NULL);
SELECT pgcrypt_at_rest.alter_keyring(NULL, '1 day', NULL);
SELECT pgcrypt_at_rest.alter_keyring('rot', NULL, 0);
SELECT pgcrypt_at_rest.alter_keyring('rot', '-1 day', NULL);
-- named arguments: an omitted one leaves its property as it is; NULL is no limit
SELECT pgcrypt_at_rest.alter_keyring('rot', '90 days', 1000000);
SELECT pgcrypt_at_rest.alter_keyring('rot', priority => 5);
SELECT name, rotate_after, max_encryptions, priority FROM pgcrypt_at_rest.keyrings WHERE name = 'rot';
SELECT pgcrypt_at_rest.alter_keyring('rot', max_encryptions => NULL);
SELECT name, rotate_after, max_encryptions, priority FROM pgcrypt_at_rest.keyrings WHERE name = 'rot';
SELECT pgcrypt_at_rest.alter_keyring(name => 'rot', rotate_after => '1 year');
SELECT name, rotate_after, max_encryptions, priority FROM pgcrypt_at_rest.keyrings WHERE name = 'rot';
SELECT pgcrypt_at_rest.alter_keyring('rot', rotate_after => NULL, priority => 0);
SELECT name, rotate_after, max_encryptions, priority FROM pgcrypt_at_rest.keyrings WHERE name = 'rot';
SELECT pgcrypt_at_rest.alter_keyring('rot', max_encryptions => 0);
SELECT pgcrypt_at_rest.alter_keyring('rot', rotate_after => '-2 days');

-- tables the drain must cover: plain, partitioned, inherited, a domain, a
-- context declared from the row, one never declared, and a materialized view
CREATE DOMAIN secret AS pgcrypt_at_rest.encrypted;
CREATE TABLE plain (id int PRIMARY KEY, v pgcrypt_at_rest.encrypted, note text,
					updated_at timestamptz DEFAULT '2000-01-01');
CREATE TABLE parted (id int, v secret) PARTITION BY RANGE (id);
CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_high PARTITION OF parted FOR VALUES FROM (100) TO (1000);
CREATE TABLE parent (id int, v pgcrypt_at_rest.encrypted);
CREATE TABLE child (extra int) INHERITS (parent);
CREATE TABLE bound (id int PRIMARY KEY, v pgcrypt_at_rest.encrypted);
CREATE TABLE unbound (id int PRIMARY KEY, v pgcrypt_at_rest.encrypted);
INSERT INTO plain SELECT i, pgcrypt_at_rest.encrypt('plain ' || i, 'rot'), 'n' || i FROM generate_series(1, 50) i;
INSERT INTO parted SELECT i, pgcrypt_at_rest.encrypt('parted ' || i, 'rot') FROM generate_series(1, 150, 3) i;
INSERT INTO parent SELECT i, pgcrypt_at_rest.encrypt('parent ' || i, 'rot') FROM generate_series(1, 10) i;
INSERT INTO child SELECT i, pgcrypt_at_rest.encrypt('child ' || i, 'rot'), i FROM generate_series(1, 10) i;
INSERT INTO bound SELECT i, pgcrypt_at_rest.encrypt('bound ' || i, 'rot', int4send(i)) FROM generate_series(1, 10) i;
INSERT INTO unbound SELECT i, pgcrypt_at_rest.encrypt('unbound ' || i, 'rot', int4send(i)) FROM generate_series(1, 5) i;
CREATE MATERIALIZED VIEW snapshot AS SELECT id, v FROM plain WHERE id <= 5;

-- a user trigger that must never fire for the drain
CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'user trigger fired on %', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER refuse BEFORE UPDATE ON plain FOR EACH ROW EXECUTE FUNCTION refuse_update();
CREATE TRIGGER refuse BEFORE UPDATE ON parted_low FOR EACH ROW EXECUTE FUNCTION refuse_update();

-- declaring where a context comes from
SELECT pgcrypt_at_rest.set_column_context('bound', 'v', 'pg_catalog.int4send(id)');
SELECT * FROM pgcrypt_at_rest.column_context ORDER BY table_name;
SELECT pgcrypt_at_rest.set_column_context('bound', 'nope', 'pg_catalog.int4send(id)');
SELECT pgcrypt_at_rest.set_column_context('plain', 'note', 'pg_catalog.int4send(id)');
SELECT pgcrypt_at_rest.set_column_context('bound', 'v', 'int4send(no_such_column)');
SELECT pgcrypt_at_rest.set_column_context('bound', 'v', 'this is not sql');
SELECT pgcrypt_at_rest.set_column_context('bound', 'v', 'pg_catalog.int4send(id)); DROP TABLE plain; SELECT (1');
SELECT pgcrypt_at_rest.set_column_context('bound', 'v', 'pg_catalog.int4send(id)) -- ');
SELECT pgcrypt_at_rest.set_column_context(NULL, 'v', 'x');
CREATE ROLE regress_rot_other;
SET ROLE regress_rot_other;
SELECT pgcrypt_at_rest.set_column_context('bound', 'v', 'pg_catalog.int4send(id)');
RESET ROLE;
DROP ROLE regress_rot_other;

-- deprecate_key on the active key replaces it first
SELECT pgcrypt_at_rest.deprecate_key(:rot_key1);
SELECT key_id = :rot_key1 AS first, status FROM pgcrypt_at_rest.keys WHERE keyring = 'rot' ORDER BY generation;
SELECT active_key_id AS rot_key2 FROM pgcrypt_at_rest.keyrings WHERE name = 'rot' \gset
-- a second time it only says so, in a NOTICE; its text names the key, whose
-- id differs at every run, so only its severity and SQLSTATE are shown
\set VERBOSITY sqlstate
SELECT pgcrypt_at_rest.deprecate_key(:rot_key1);
\set VERBOSITY default
-- ... and makes no new key
SELECT key_id = :rot_key1 AS first, key_id = :rot_key2 AS second, generation, status
  FROM pgcrypt_at_rest.keys WHERE keyring = 'rot' ORDER BY generation;
SELECT pgcrypt_at_rest.deprecate_key(424242);

-- nothing is drained yet: the status shows the key and no column
SELECT key_id = :rot_key1 AS is_first, keyring, table_name, remaining, state FROM pgcrypt_at_rest.rotation_status
 ORDER BY (SELECT d.created_order FROM pgcrypt_at_rest.data_key d WHERE d.id = key_id);

-- one pass, in this transaction
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT table_name, column_name, remaining, reencrypted, unrotatable, unrotatable_reason
  FROM pgcrypt_at_rest.rotation_status ORDER BY table_name::text, column_name;
-- the same, in words
SELECT table_name, column_name, state
  FROM pgcrypt_at_rest.rotation_status ORDER BY table_name::text, column_name;

-- every value re-encrypted decrypts to what it was, and nothing else changed
SELECT count(*) AS plain_rows,
	   count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = :rot_key2) AS new_key,
	   count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'plain ' || id) AS decrypts,
	   count(*) FILTER (WHERE note = 'n' || id AND updated_at = '2000-01-01') AS untouched
  FROM plain;
SELECT tableoid::regclass, count(*), count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = :rot_key2) AS new_key,
	   bool_and(pgcrypt_at_rest.decrypt_text(v) = 'parted ' || id) AS decrypts
  FROM parted GROUP BY 1 ORDER BY 1;
SELECT tableoid::regclass, count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = :rot_key2) AS new_key
  FROM parent GROUP BY 1 ORDER BY 1;
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v, int4send(id)) = 'bound ' || id
						  AND pgcrypt_at_rest.key_id(v) = :rot_key2) AS bound_rotated FROM bound;
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = :rot_key1) AS unbound_still_old FROM unbound;

-- values left under the key keep it alive (the keys destroyed here are the
-- ones earlier tests deprecated and whose tables they dropped), shown in the
-- order destroy_drained_keys() returned them, by keyring and generation
SELECT d.n, k.keyring, k.generation
  FROM unnest(pgcrypt_at_rest.destroy_drained_keys()) WITH ORDINALITY AS d(key_id, n)
  LEFT JOIN pgcrypt_at_rest.keys k USING (key_id)
 ORDER BY d.n;
SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = :rot_key1;

-- declare the missing context and refresh the view: now the key can go
SELECT pgcrypt_at_rest.set_column_context('unbound', 'v', 'pg_catalog.int4send(id)');
REFRESH MATERIALIZED VIEW snapshot;
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT count(*) AS rows_left FROM pgcrypt_at_rest.rotation_status WHERE remaining > 0;
SELECT pgcrypt_at_rest.destroy_drained_keys() = ARRAY[:rot_key1] AS destroyed_first_key;
SELECT key_id = :rot_key1 AS first, status, sealed_copies, destroyed_at IS NOT NULL AS has_destroyed_at
  FROM pgcrypt_at_rest.keys WHERE keyring = 'rot' ORDER BY generation;
SELECT count(*) AS deprecated_left FROM pgcrypt_at_rest.rotation_status WHERE keyring = 'rot';

-- everything still decrypts; a copy of an old value says its key was destroyed
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v, int4send(id)) = 'unbound ' || id) AS unbound_ok FROM unbound;
SELECT sqlstate_of(format('SELECT pgcrypt_at_rest.decrypt(%L::bytea::pgcrypt_at_rest.encrypted)',
	overlay(v::bytea placing int4send(:rot_key1) from 2 for 4))) LIKE '55000: key % was destroyed' AS destroyed_error
  FROM plain WHERE id = 1;
SELECT error_of(format('SELECT pgcrypt_at_rest.deprecate_key(%s)', :rot_key1));

-- destroy_drained_keys needs fresh snapshots
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgcrypt_at_rest.destroy_drained_keys();
ROLLBACK;

-- ... and a transaction of its own: others may be waiting for its locks
BEGIN;
SELECT txid_current() > 0 AS wrote;
SELECT pgcrypt_at_rest.destroy_drained_keys();
ROLLBACK;

-- a drain with nothing to do
SELECT pgcrypt_at_rest.drain() AS nothing;

-- no trigger fires during re-encryption, not even ENABLE ALWAYS or ENABLE
-- REPLICA ones, and no rule applies, whatever the caller's replica mode
CREATE TABLE always_fires (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO always_fires VALUES (1, pgcrypt_at_rest.encrypt('a', 'rot'));
CREATE TRIGGER refuse BEFORE UPDATE ON always_fires FOR EACH ROW EXECUTE FUNCTION refuse_update();
ALTER TABLE always_fires ENABLE ALWAYS TRIGGER refuse;
CREATE TRIGGER refuse_replica AFTER UPDATE ON always_fires FOR EACH STATEMENT EXECUTE FUNCTION refuse_update();
ALTER TABLE always_fires ENABLE REPLICA TRIGGER refuse_replica;
CREATE RULE swallow AS ON UPDATE TO always_fires DO INSTEAD NOTHING;
SELECT pgcrypt_at_rest.rotate_keyring('rot') AS rot_always \gset
SET session_replication_role = replica;
SELECT pgcrypt_at_rest.drain() > 0 AS drained;
RESET session_replication_role;
SELECT pgcrypt_at_rest.key_id(v) = :rot_always AS under_new_key, pgcrypt_at_rest.decrypt_text(v)
  FROM always_fires;
DROP TABLE always_fires;

-- a context declared for one owner is not run as the next one
CREATE ROLE regress_rot_owner;
CREATE TABLE handed_over (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO handed_over SELECT i, pgcrypt_at_rest.encrypt('h' || i, 'rot', int4send(i)) FROM generate_series(1, 3) i;
SELECT pgcrypt_at_rest.set_column_context('handed_over', 'v', 'pg_catalog.int4send(id)');
ALTER TABLE handed_over OWNER TO regress_rot_owner;
SELECT pgcrypt_at_rest.rotate_keyring('rot') AS rot_key3 \gset
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT remaining, unrotatable, unrotatable_reason FROM pgcrypt_at_rest.rotation_status
 WHERE table_name = 'handed_over'::regclass;
SELECT pgcrypt_at_rest.set_column_context('handed_over', 'v', 'pg_catalog.int4send(id)');
SELECT table_owner FROM pgcrypt_at_rest.column_context WHERE table_name = 'handed_over';
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = :rot_key3
						  AND pgcrypt_at_rest.decrypt_text(v, int4send(id)) = 'h' || id) AS rotated
  FROM handed_over;
DROP TABLE handed_over;
DROP ROLE regress_rot_owner;

-- the owner is recorded as a role: REASSIGN OWNED moves the table, not the
-- declaration, which goes stale; a dropped role leaves only its OID behind
CREATE ROLE regress_rot_first;
CREATE ROLE regress_rot_second;
CREATE TABLE reassigned (id int, v pgcrypt_at_rest.encrypted);
ALTER TABLE reassigned OWNER TO regress_rot_first;
SET ROLE regress_rot_first;
SELECT pgcrypt_at_rest.set_column_context('reassigned', 'v', 'pg_catalog.int4send(id)');
RESET ROLE;
SELECT table_owner, pg_typeof(table_owner) FROM pgcrypt_at_rest.column_context WHERE table_name = 'reassigned';
INSERT INTO reassigned SELECT i, pgcrypt_at_rest.encrypt('r' || i, 'rot', int4send(i)) FROM generate_series(1, 2) i;
REASSIGN OWNED BY regress_rot_first TO regress_rot_second;
DROP ROLE regress_rot_first;
SELECT table_owner::text ~ '^[0-9]+$' AS only_an_oid_left FROM pgcrypt_at_rest.column_context
 WHERE table_name = 'reassigned';
SELECT pgcrypt_at_rest.rotate_keyring('rot') > 0 AS rotated;
SELECT pgcrypt_at_rest.drain() >= 0 AS drained;
SELECT remaining, unrotatable, unrotatable_reason FROM pgcrypt_at_rest.rotation_status
 WHERE table_name = 'reassigned'::regclass;
DROP TABLE reassigned;
DROP ROLE regress_rot_second;

-- a generated column computed from the ciphertext changes with it: in a
-- unique index it is checked as usual, but in a foreign key (whose checks are
-- triggers, which do not fire) the table is refused and its values kept
CREATE TABLE fingerprinted (id int, v pgcrypt_at_rest.encrypted,
	fp bytea GENERATED ALWAYS AS (sha256(v::bytea)) STORED UNIQUE);
INSERT INTO fingerprinted SELECT i, pgcrypt_at_rest.encrypt('f' || i, 'rot') FROM generate_series(1, 3) i;
CREATE TABLE allowed_keys (kid int PRIMARY KEY);
INSERT INTO allowed_keys SELECT key_id FROM pgcrypt_at_rest.keys WHERE keyring = 'rot' AND status = 'active';
CREATE TABLE key_checked (id int, v pgcrypt_at_rest.encrypted,
	kid int GENERATED ALWAYS AS (pgcrypt_at_rest.key_id(v)) STORED REFERENCES allowed_keys);
INSERT INTO key_checked SELECT i, pgcrypt_at_rest.encrypt('k' || i, 'rot') FROM generate_series(1, 2) i;
SELECT pgcrypt_at_rest.rotate_keyring('rot') AS rot_fp \gset
SELECT pgcrypt_at_rest.drain();
-- the failing table was that table's alone: the same drain() re-encrypted the others
DROP TABLE key_checked, allowed_keys;
SELECT pgcrypt_at_rest.drain() AS left_after_the_drop;
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = :rot_fp) AS under_new_key,
	   count(*) FILTER (WHERE fp = sha256(v::bytea)) AS fingerprint_follows,
	   count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'f' || id) AS decrypts
  FROM fingerprinted;
DROP TABLE fingerprinted;

-- a deferred constraint that finds a possible conflict would need its
-- recheck trigger at commit: the row is refused, the constraint holds
CREATE TABLE one_per_key (id int, v pgcrypt_at_rest.encrypted,
	EXCLUDE USING btree (pgcrypt_at_rest.key_id(v) WITH =) DEFERRABLE INITIALLY DEFERRED);
INSERT INTO one_per_key VALUES (1, pgcrypt_at_rest.encrypt('a', 'rot'));
SELECT pgcrypt_at_rest.rotate_keyring('rot') > 0 AS rotated;
INSERT INTO one_per_key VALUES (2, pgcrypt_at_rest.encrypt('b', 'rot'));
SELECT pgcrypt_at_rest.drain();
SELECT count(DISTINCT pgcrypt_at_rest.key_id(v)) = count(*) AS constraint_holds FROM one_per_key;
DROP TABLE one_per_key;

-- a failing owner's code is reported as the table's, without its own hint
CREATE FUNCTION shouting_context(id int) RETURNS bytea LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'key store corrupted' USING HINT = 'Run ALTER ROLE tenant SUPERUSER';
END $$;
CREATE TABLE shouting (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO shouting VALUES (1, pgcrypt_at_rest.encrypt('s', 'rot', int4send(1)));
SELECT pgcrypt_at_rest.set_column_context('shouting', 'v', 'public.shouting_context(id)');
SELECT pgcrypt_at_rest.rotate_keyring('rot') > 0 AS rotated;
SELECT pgcrypt_at_rest.drain();
-- the failure is recorded on the table, and counted: the worker retries it
-- later and later (drain() tries every table every time)
SELECT DISTINCT table_name, column_name, last_error, table_failures, table_retry_after > now() AS backing_off
  FROM pgcrypt_at_rest.rotation_status WHERE table_name = 'shouting'::regclass;
SELECT pgcrypt_at_rest.drain() AS drained_with_shouting_failing;
SELECT relid::regclass, failures, last_error FROM pgcrypt_at_rest.rotation_failure;
-- once it succeeds, its failures are forgotten
CREATE OR REPLACE FUNCTION shouting_context(id int) RETURNS bytea LANGUAGE sql AS 'SELECT int4send(id)';
SELECT pgcrypt_at_rest.drain() AS drained_once_fixed;
SELECT count(*) AS failing_tables FROM pgcrypt_at_rest.rotation_failure;
SELECT pgcrypt_at_rest.decrypt_text(v, int4send(id)) FROM shouting;
DROP TABLE shouting;
DROP FUNCTION shouting_context(int);

-- a table's code that raises the cancel's SQLSTATE itself is that table's
-- failure: drain() warns and goes on
CREATE TABLE fake_first (k int);
INSERT INTO fake_first SELECT active_key_id FROM pgcrypt_at_rest.keyrings WHERE name = 'rot';
CREATE FUNCTION fake_cancel(v pgcrypt_at_rest.encrypted) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
	IF pgcrypt_at_rest.key_id(v) <> (SELECT k FROM public.fake_first) THEN
		RAISE EXCEPTION 'pretending to be a cancel' USING ERRCODE = 'query_canceled';
	END IF;
	RETURN true;
END $$;
CREATE TABLE fake_cancelled (id int, v pgcrypt_at_rest.encrypted CHECK (fake_cancel(v)));
INSERT INTO fake_cancelled VALUES (1, pgcrypt_at_rest.encrypt('f', 'rot'));
SELECT pgcrypt_at_rest.rotate_keyring('rot') > 0 AS rotated;
SELECT pgcrypt_at_rest.drain() >= 0 AS drain_went_on;
SELECT 'the session still works' AS after_fake_cancel;
DROP TABLE fake_cancelled, fake_first;
DROP FUNCTION fake_cancel(pgcrypt_at_rest.encrypted);
-- a real cancel (here statement_timeout) ends the whole drain(), and leaves
-- the session as any cancelled statement does
CREATE FUNCTION sleepy_context(id int) RETURNS bytea LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_sleep(5);
	RETURN int4send(id);
END $$;
CREATE TABLE sleepy (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO sleepy VALUES (1, pgcrypt_at_rest.encrypt('s', 'rot', int4send(1)));
SELECT pgcrypt_at_rest.set_column_context('sleepy', 'v', 'public.sleepy_context(id)');
SELECT pgcrypt_at_rest.rotate_keyring('rot') > 0 AS rotated;
SET statement_timeout = '300ms';
SELECT pgcrypt_at_rest.drain();
RESET statement_timeout;
SELECT 'the session still works' AS after_cancel;
BEGIN;
SELECT count(*) AS sleepy_rows FROM sleepy;
COMMIT;
DROP TABLE sleepy;
DROP FUNCTION sleepy_context(int);

-- the caller's replica mode and large-object compatibility do not reach a
-- table owner's code; its other settings are the running session's
CREATE ROLE regress_rot_tenant;
CREATE TABLE tenant_rows (id int, v pgcrypt_at_rest.encrypted);
CREATE TABLE tenant_seen (setting text, value text);
ALTER TABLE tenant_rows OWNER TO regress_rot_tenant;
ALTER TABLE tenant_seen OWNER TO regress_rot_tenant;
CREATE FUNCTION tenant_context(id int) RETURNS bytea LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.tenant_seen
		SELECT name, setting FROM pg_catalog.pg_settings
		 WHERE name IN ('lo_compat_privileges', 'session_replication_role', 'log_statement');
	RETURN pg_catalog.int4send(id);
END $$;
ALTER FUNCTION tenant_context(int) OWNER TO regress_rot_tenant;
INSERT INTO tenant_rows VALUES (1, pgcrypt_at_rest.encrypt('t', 'rot', int4send(1)));
SET ROLE regress_rot_tenant;
SELECT pgcrypt_at_rest.set_column_context('tenant_rows', 'v', 'public.tenant_context(id)');
RESET ROLE;
SELECT pgcrypt_at_rest.rotate_keyring('rot') > 0 AS rotated;
SET lo_compat_privileges = on;
SET session_replication_role = replica;
SET log_statement = 'all';
SELECT pgcrypt_at_rest.drain() > 0 AS drained;
SELECT current_setting('lo_compat_privileges') AS caller_lo_compat, current_setting('log_statement') AS caller_log;
RESET lo_compat_privileges;
RESET session_replication_role;
RESET log_statement;
SELECT DISTINCT setting, value FROM tenant_seen ORDER BY 1;
SELECT pgcrypt_at_rest.decrypt_text(v, int4send(id)) FROM tenant_rows;
DROP TABLE tenant_rows, tenant_seen;
DROP FUNCTION tenant_context(int);
DROP ROLE regress_rot_tenant;

-- a temporary table's values cannot be counted: while it exists, no key goes
CREATE TABLE kept_values (v pgcrypt_at_rest.encrypted);
INSERT INTO kept_values SELECT pgcrypt_at_rest.encrypt('k', 'rot');
CREATE TEMP TABLE stash AS SELECT v FROM kept_values;
SELECT pgcrypt_at_rest.rotate_keyring('rot') > 0 AS rotated;
SELECT pgcrypt_at_rest.drain() AS reencrypted;
SELECT pgcrypt_at_rest.destroy_drained_keys() AS destroyed;
SELECT column_name, last_error LIKE 'a temporary table:%' AS reported
  FROM pgcrypt_at_rest.rotation_status WHERE table_name = 'stash'::regclass;
SELECT pgcrypt_at_rest.decrypt_text(v) AS still_readable FROM stash;
DROP TABLE stash;
SELECT cardinality(pgcrypt_at_rest.destroy_drained_keys()) AS destroyed;
DROP TABLE kept_values;

-- management functions are not for PUBLIC
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'pgcrypt_at_rest'
   AND p.proname IN ('deprecate_key', 'alter_keyring', 'set_column_context', 'drain', 'destroy_drained_keys')
 ORDER BY 1::text;

DROP MATERIALIZED VIEW snapshot;
DROP TABLE plain, parted, parent, child, bound, unbound;
DROP FUNCTION refuse_update();
DROP DOMAIN secret;
