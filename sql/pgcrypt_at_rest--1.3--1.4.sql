/* pgcrypt_at_rest--1.3--1.4.sql: key ids that do not repeat across databases */

\echo Use "ALTER EXTENSION pgcrypt_at_rest UPDATE TO '1.4'" to load this file. \quit

------------------------------------------------------------------------------
-- New keys get random ids
------------------------------------------------------------------------------

-- Serial key ids repeat in every database, so a value copied from one to
-- another (a single-table dump, dblink, postgres_fdw) named a key that
-- existed there, another key, and was reported as altered.  The library now
-- draws each new key's id at random from [2^24, 2^31) and checks it unused
-- here; such a value almost surely names no key here and is reported so.
-- Keys made before keep their ids, and values under them keep working.
ALTER TABLE pgcrypt_at_rest.data_key ALTER COLUMN id DROP DEFAULT;

-- Random ids no longer tell which key is newer; created_order does, set by
-- the library from the old sequence (which keeps its name, so that a dump
-- taken at an older version still restores).  No default: rows such a dump
-- loads have none, and their serial ids, all below the random ones, give
-- their order (a default would number them in the order COPY reads them).
ALTER TABLE pgcrypt_at_rest.data_key ADD COLUMN created_order bigint;
UPDATE pgcrypt_at_rest.data_key SET created_order = id;
ALTER SEQUENCE pgcrypt_at_rest.data_key_id_seq OWNED BY pgcrypt_at_rest.data_key.created_order;
COMMENT ON COLUMN pgcrypt_at_rest.data_key.created_order IS
	'the order keys were made in, across keyrings (ids are random); NULL for a key restored from a dump taken before 1.4, whose serial id orders it';

-- generation: 1 for a keyring's first key, 2 for the key that replaced it...
CREATE OR REPLACE VIEW pgcrypt_at_rest.keys AS
	SELECT k.id AS key_id,
		   r.name AS keyring,
		   k.status,
		   k.created_at,
		   k.deprecated_at,
		   k.destroyed_at,
		   (SELECT count(*) FROM pgcrypt_at_rest.sealed_key s
			 WHERE s.key_id = k.id) AS sealed_copies,
		   k.encryptions,
		   k.drained_at,
		   k.installation IS DISTINCT FROM (SELECT i.id FROM pgcrypt_at_rest.installation i)
			 AS restored,
		   row_number() OVER (PARTITION BY k.keyring_id ORDER BY COALESCE(k.created_order, k.id)) AS generation
	  FROM pgcrypt_at_rest.data_key k
	  JOIN pgcrypt_at_rest.keyring r ON r.id = k.keyring_id;

-- drain_order: priority, then newest first by creation, not by id
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
	  JOIN (SELECT d.id, rank() OVER (ORDER BY g.drain_priority DESC, COALESCE(d.created_order, d.id) DESC) AS drain_order
			  FROM pgcrypt_at_rest.data_key d
			  JOIN pgcrypt_at_rest.keyring g ON g.id = d.keyring_id
			 WHERE d.status = 'deprecated') o ON o.id = k.id
	  LEFT JOIN pgcrypt_at_rest.rotation_progress p
		ON p.key_id = k.id AND (p.remaining > 0 OR p.reencrypted > 0 OR p.last_error IS NOT NULL)
	  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = p.relid AND a.attnum = p.attnum
	  LEFT JOIN pgcrypt_at_rest.rotation_failure f ON f.relid = p.relid
	 WHERE k.status = 'deprecated';

COMMENT ON VIEW pgcrypt_at_rest.keys IS
	'data keys: status, how many servers hold a copy, and generation within the keyring (1 = first)';

------------------------------------------------------------------------------
-- destroy_key(): unreadable_values is a bound
------------------------------------------------------------------------------

-- It was the exact count, so a role inserting forged values under the key
-- (any role that can write one row) made every call miss by one.
COMMENT ON FUNCTION pgcrypt_at_rest.destroy_key(integer, bigint) IS
	'destroy a deprecated key now; if values still need it, only when at most unreadable_values of them are found; returns how many';
