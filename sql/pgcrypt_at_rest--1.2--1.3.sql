/* pgcrypt_at_rest--1.2--1.3.sql: a worker that stands up to hostile tenants and many databases */

\echo Use "ALTER EXTENSION pgcrypt_at_rest UPDATE TO '1.3'" to load this file. \quit

------------------------------------------------------------------------------
-- Values that pin a key: listed, and a key destroyed anyway when an admin says so
------------------------------------------------------------------------------

-- A value no key opens (forged, damaged, or under a context no one declared)
-- cannot be re-encrypted, so its key is never destroyed by itself: anyone who
-- can write one row could keep a key alive.  An administrator sees where such
-- values are, and may destroy the key anyway, saying how many values it costs.
CREATE FUNCTION pgcrypt_at_rest.rows_under_key(key_id integer)
RETURNS TABLE (table_name regclass, column_name name, ctid tid, value_count integer)
AS 'MODULE_PATHNAME', 'pcar_rows_under_key'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

-- Not STRICT: a NULL unreadable_values means "none given".
CREATE FUNCTION pgcrypt_at_rest.destroy_key(key_id integer, unreadable_values bigint DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'pcar_destroy_key_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION pgcrypt_at_rest.rows_under_key(integer) IS
	'where values under a key are: table, column, row (ctid) and how many; a column that cannot be read gives one row without ctid';
COMMENT ON FUNCTION pgcrypt_at_rest.destroy_key(integer, bigint) IS
	'destroy a deprecated key now; if values still need it, only when unreadable_values says how many; returns that number';

-- rows_under_key() reads every table whatever the caller's rights on it
REVOKE ALL ON FUNCTION
	pgcrypt_at_rest.rows_under_key(integer),
	pgcrypt_at_rest.destroy_key(integer, bigint)
	FROM PUBLIC;

------------------------------------------------------------------------------
-- The worker: per-table failures, waiting databases
------------------------------------------------------------------------------

-- A table whose batches fail (its owner's code errs or runs past
-- worker_statement_timeout, it stays locked past worker_lock_timeout) waits
-- before it is tried again, longer after each failure, while every other
-- table goes on.  Rotation state, like rotation_pass: not dumped.
CREATE TABLE pgcrypt_at_rest.rotation_failure (
	relid oid PRIMARY KEY,
	failures integer NOT NULL,
	last_error text NOT NULL,
	first_failed_at timestamptz NOT NULL DEFAULT now(),
	last_failed_at timestamptz NOT NULL DEFAULT now(),
	retry_after timestamptz NOT NULL
);
REVOKE ALL ON pgcrypt_at_rest.rotation_failure FROM PUBLIC;

COMMENT ON TABLE pgcrypt_at_rest.rotation_failure IS
	'tables whose re-encryption failed, and when the worker tries them again';

-- Every database's place in the worker pool (cluster-wide, from shared
-- memory).  Its columns are the view's: a record, so that \df stays short.
CREATE FUNCTION pgcrypt_at_rest._worker_databases()
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pcar_worker_databases'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

REVOKE ALL ON FUNCTION pgcrypt_at_rest._worker_databases() FROM PUBLIC;

CREATE VIEW pgcrypt_at_rest.rotation_workers AS
	SELECT d.datname AS database,
		   w.state,
		   w.pid,
		   w.work_signalled,
		   w.waiting_since,
		   w.last_visit_started_at,
		   w.last_visit_ended_at
	  FROM pgcrypt_at_rest._worker_databases()
		   AS w(database_oid oid, pid integer, state text, work_signalled boolean,
				waiting_since timestamptz, last_visit_started_at timestamptz,
				last_visit_ended_at timestamptz)
	  JOIN pg_catalog.pg_database d ON d.oid = w.database_oid;

COMMENT ON VIEW pgcrypt_at_rest.rotation_workers IS
	'every database the launcher serves: running, waiting for a worker (and since when), or idle';

------------------------------------------------------------------------------
-- Servers join and leave
------------------------------------------------------------------------------

CREATE FUNCTION pgcrypt_at_rest.add_server(name text, public_key bytea)
RETURNS integer
AS 'MODULE_PATHNAME', 'pcar_add_server_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION pgcrypt_at_rest.remove_server(name text)
RETURNS integer
AS 'MODULE_PATHNAME', 'pcar_remove_server_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- A server moving to a new secret: copies for both keys until it runs with the new one.
ALTER TABLE pgcrypt_at_rest.server
	ADD COLUMN pending_public_key bytea UNIQUE,
	ADD COLUMN pending_since timestamptz;

CREATE FUNCTION pgcrypt_at_rest.replace_server_key(name text, new_public_key bytea)
RETURNS integer
AS 'MODULE_PATHNAME', 'pcar_replace_server_key_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION pgcrypt_at_rest.complete_server_key_replacement(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'pcar_complete_server_key_replacement_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION pgcrypt_at_rest.replace_server_key(text, bytea) IS
	'move a server to a new secret: seal every live key for its new public key too; returns how many';
COMMENT ON FUNCTION pgcrypt_at_rest.complete_server_key_replacement(text) IS
	'once the server runs with its new secret: delete the copies sealed for the old one';

COMMENT ON FUNCTION pgcrypt_at_rest.add_server(text, bytea) IS
	'seal every live key for a new server''s public key; returns how many';
COMMENT ON FUNCTION pgcrypt_at_rest.remove_server(text) IS
	'delete a server''s copies and replace every active key it could open; returns how many live keys it held';

REVOKE ALL ON FUNCTION
	pgcrypt_at_rest.add_server(text, bytea),
	pgcrypt_at_rest.remove_server(text),
	pgcrypt_at_rest.replace_server_key(text, bytea),
	pgcrypt_at_rest.complete_server_key_replacement(text)
	FROM PUBLIC;

-- This server's public key, or NULL without a secret (the view must not fail).
CREATE FUNCTION pgcrypt_at_rest._this_server_public_key()
RETURNS bytea
AS 'MODULE_PATHNAME', 'pcar_this_server_public_key'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE OR REPLACE VIEW pgcrypt_at_rest.servers AS
	SELECT s.name,
		   s.public_key,
		   s.added_at,
		   (SELECT count(*) FROM pgcrypt_at_rest.data_key k
			  JOIN pgcrypt_at_rest.sealed_key c ON c.key_id = k.id AND c.server_public_key = s.public_key
			 WHERE k.status <> 'destroyed') AS live_keys_held,
		   (SELECT count(*) FROM pgcrypt_at_rest.data_key k
			 WHERE k.status <> 'destroyed'
			   AND NOT EXISTS (SELECT FROM pgcrypt_at_rest.sealed_key c
								WHERE c.key_id = k.id AND c.server_public_key = s.public_key))
			 AS live_keys_missing,
		   coalesce(pgcrypt_at_rest._this_server_public_key() IN (s.public_key, s.pending_public_key), false)
			 AS this_server,
		   s.pending_public_key,
		   s.pending_since
	  FROM pgcrypt_at_rest.server s;

COMMENT ON VIEW pgcrypt_at_rest.servers IS
	'servers that data keys are sealed to: live keys each holds and lacks, and which one you are connected to';

------------------------------------------------------------------------------
-- Internal helpers live apart from the API, so that \df pgcrypt_at_rest.*
-- lists what users call.  Triggers and views use them by OID: nothing else
-- changes.
------------------------------------------------------------------------------

CREATE SCHEMA pgcrypt_at_rest_internal;
REVOKE ALL ON SCHEMA pgcrypt_at_rest_internal FROM PUBLIC;
COMMENT ON SCHEMA pgcrypt_at_rest_internal IS
	'pgcrypt_at_rest''s internal helpers (triggers, views); not for calling';

ALTER FUNCTION pgcrypt_at_rest._invalidate_key_cache() SET SCHEMA pgcrypt_at_rest_internal;
ALTER FUNCTION pgcrypt_at_rest._skip_known_server() SET SCHEMA pgcrypt_at_rest_internal;
ALTER FUNCTION pgcrypt_at_rest._register_local_server() SET SCHEMA pgcrypt_at_rest_internal;
ALTER FUNCTION pgcrypt_at_rest._destruction_hold(uuid) SET SCHEMA pgcrypt_at_rest_internal;
ALTER FUNCTION pgcrypt_at_rest._worker_databases() SET SCHEMA pgcrypt_at_rest_internal;
ALTER FUNCTION pgcrypt_at_rest._this_server_public_key() SET SCHEMA pgcrypt_at_rest_internal;

------------------------------------------------------------------------------
-- Keyring properties take named arguments, and keyrings a drain priority
------------------------------------------------------------------------------

-- After a server leaves, the most sensitive data is re-encrypted first:
-- passes drain one priority at a time, highest first, then the next.
ALTER TABLE pgcrypt_at_rest.keyring ADD COLUMN drain_priority integer NOT NULL DEFAULT 0;
ALTER TABLE pgcrypt_at_rest.rotation_pass ADD COLUMN priority integer NOT NULL DEFAULT 0;

-- alter_keyring() gains named arguments, an omitted one leaving its property
-- as it is (the defaults are values no call can mean: a negative interval or
-- count).  Calls with the three arguments of 1.1 keep their meaning, NULL
-- included (no limit).  Grants on the old function carry over.
DO $$
DECLARE
	grantees text[];
	grantee text;
BEGIN
	SELECT pg_catalog.array_agg(DISTINCT a.grantee::pg_catalog.regrole::pg_catalog.text) INTO grantees
	  FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
	 WHERE p.oid = 'pgcrypt_at_rest.alter_keyring(text, interval, bigint)'::pg_catalog.regprocedure
	   AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner;

	DROP FUNCTION pgcrypt_at_rest.alter_keyring(text, interval, bigint);
	CREATE FUNCTION pgcrypt_at_rest.alter_keyring(name text,
		rotate_after interval DEFAULT '-1 second',
		max_encryptions bigint DEFAULT -1,
		priority integer DEFAULT NULL)
	RETURNS void
	AS 'MODULE_PATHNAME', 'pcar_alter_keyring'
	LANGUAGE C VOLATILE PARALLEL UNSAFE;
	COMMENT ON FUNCTION pgcrypt_at_rest.alter_keyring(text, interval, bigint, integer) IS
		'set a keyring''s properties: rotation policy (NULL: no limit) and drain priority; an omitted argument leaves its property as it is';
	REVOKE ALL ON FUNCTION pgcrypt_at_rest.alter_keyring(text, interval, bigint, integer) FROM PUBLIC;

	FOREACH grantee IN ARRAY coalesce(grantees, '{}') LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION pgcrypt_at_rest.alter_keyring(text, interval, bigint, integer) TO %s',
								  grantee);
	END LOOP;
END
$$;

-- keyrings: whether the policy is due, the key a due policy waits for, and
-- the drain priority
CREATE OR REPLACE VIEW pgcrypt_at_rest.keyrings AS
	SELECT r.name,
		   k.id AS active_key_id,
		   (SELECT count(*) FROM pgcrypt_at_rest.data_key d
			 WHERE d.keyring_id = r.id AND d.status = 'deprecated') AS deprecated_keys,
		   r.created_at,
		   r.rotate_after,
		   r.max_encryptions,
		   due.policy_due,
		   CASE WHEN due.policy_due THEN
			 (SELECT min(d.id) FROM pgcrypt_at_rest.data_key d
			   WHERE d.keyring_id = r.id AND d.status = 'deprecated' AND d.drained_at IS NULL)
		   END AS policy_waits_for_key,
		   r.drain_priority AS priority
	  FROM pgcrypt_at_rest.keyring r
	  LEFT JOIN pgcrypt_at_rest.data_key k ON k.keyring_id = r.id AND k.status = 'active'
	  CROSS JOIN LATERAL (SELECT coalesce(k.created_at + r.rotate_after <= now(), false)
								 OR coalesce(k.encryptions >= r.max_encryptions, false)
								 AS policy_due) due;

COMMENT ON VIEW pgcrypt_at_rest.keyrings IS
	'keyrings, their active key, and whether their rotation policy is due or waits for a key still draining';

-- rotation_status: per table, a failing table's record, each row's state in
-- words, and the order keys drain in (priority, then newest first)
CREATE OR REPLACE VIEW pgcrypt_at_rest.rotation_status AS
	SELECT k.id AS key_id,
		   r.name AS keyring,
		   p.relid::regclass AS table_name,
		   a.attname AS column_name,
		   p.remaining,
		   p.reencrypted,
		   p.unrotatable,
		   p.unrotatable_reason,
		   coalesce(p.started_at, k.deprecated_at) AS started_at,
		   p.counted_at,
		   p.last_batch_at,
		   p.last_error,
		   p.last_error_at,
		   k.drained_at,
		   pgcrypt_at_rest_internal._destruction_hold(k.installation) AS destruction_held,
		   f.failures AS table_failures,
		   f.retry_after AS table_retry_after,
		   CASE
			 WHEN pgcrypt_at_rest_internal._destruction_hold(k.installation) IS NOT NULL THEN 'held'
			 WHEN k.drained_at IS NOT NULL THEN 'drained: destroyed once destroy_grace has passed'
			 WHEN p.unrotatable > 0 AND p.unrotatable >= p.remaining THEN 'values here cannot be re-encrypted'
			 WHEN f.relid IS NOT NULL THEN 'failing: retried after table_retry_after'
			 WHEN p.remaining > 0 THEN 'draining'
			 WHEN p.key_id IS NULL AND EXISTS (SELECT FROM pgcrypt_at_rest.rotation_progress q
												WHERE q.key_id = k.id AND q.counted_at IS NOT NULL)
			   THEN 'no value left: destroyed after a final count'
			 WHEN p.key_id IS NULL THEN 'waiting for the next pass'
			 ELSE 'done here'
		   END AS state,
		   o.drain_order
	  FROM pgcrypt_at_rest.data_key k
	  JOIN pgcrypt_at_rest.keyring r ON r.id = k.keyring_id
	  JOIN (SELECT d.id, rank() OVER (ORDER BY g.drain_priority DESC, d.id DESC) AS drain_order
			  FROM pgcrypt_at_rest.data_key d
			  JOIN pgcrypt_at_rest.keyring g ON g.id = d.keyring_id
			 WHERE d.status = 'deprecated') o ON o.id = k.id
	  LEFT JOIN pgcrypt_at_rest.rotation_progress p
		ON p.key_id = k.id AND (p.remaining > 0 OR p.reencrypted > 0 OR p.last_error IS NOT NULL)
	  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = p.relid AND a.attnum = p.attnum
	  LEFT JOIN pgcrypt_at_rest.rotation_failure f ON f.relid = p.relid
	 WHERE k.status = 'deprecated';
