/* pgcrypt_at_rest--1.1--1.2.sql: restored keys held, owners recorded as roles */

\echo Use "ALTER EXTENSION pgcrypt_at_rest UPDATE TO '1.2'" to load this file. \quit

------------------------------------------------------------------------------
-- Keys restored from a dump are held until the restore is confirmed
------------------------------------------------------------------------------

-- This database's installation of the extension (one row).  Not dumped: a
-- restore runs CREATE EXTENSION, which makes a new one, so keys restored
-- from a dump are told apart from keys made here.  A physical copy (base
-- backup, replica, pg_upgrade) keeps it, with the data it belongs to.
CREATE TABLE pgcrypt_at_rest.installation (
	one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
	id uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
	created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pgcrypt_at_rest.installation DEFAULT VALUES;
REVOKE ALL ON pgcrypt_at_rest.installation FROM PUBLIC;

-- The installation that made each key.  No default: a row a restore loads
-- carries the installation of the database it was dumped from, or nothing
-- if that database ran an older version, and either way it is held.
ALTER TABLE pgcrypt_at_rest.data_key ADD COLUMN installation uuid;
UPDATE pgcrypt_at_rest.data_key SET installation = (SELECT id FROM pgcrypt_at_rest.installation);

-- Why a key must not be destroyed whatever its count, or NULL.  One
-- definition, for the worker, destroy_drained_keys() and the views.  It
-- reveals nothing but that reason, so whoever may read rotation_status may
-- call it, reading the installation as its owner.
CREATE FUNCTION pgcrypt_at_rest._destruction_hold(key_installation uuid)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN EXISTS (SELECT FROM pg_catalog.pg_extension e
					  WHERE e.extname OPERATOR(pg_catalog.=) 'citus')
		THEN 'Citus is installed in this database: values in shards on other nodes cannot be counted here, so no key is destroyed'
		WHEN key_installation IS DISTINCT FROM (SELECT i.id FROM pgcrypt_at_rest.installation i)
		THEN 'restored from a dump: kept until pgcrypt_at_rest.confirm_restore() says every table''s data has been restored'
	END
$$;

CREATE FUNCTION pgcrypt_at_rest.confirm_restore()
RETURNS bigint
AS 'MODULE_PATHNAME', 'pcar_confirm_restore'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION pgcrypt_at_rest.confirm_restore() IS
	'after a restore has loaded every table: let its keys be destroyed once drained; returns how many keys';

REVOKE ALL ON FUNCTION pgcrypt_at_rest.confirm_restore() FROM PUBLIC;

------------------------------------------------------------------------------
-- pg_restore -j loads configuration tables in parallel: pg_dump orders their
-- data by foreign key only for a serial restore (the order is not recorded in
-- the archive), so a key's sealed copy could arrive before the key and fail.
-- Only the extension's functions write these tables, in one transaction each,
-- and they keep them consistent.
------------------------------------------------------------------------------

ALTER TABLE pgcrypt_at_rest.sealed_key
	DROP CONSTRAINT sealed_key_key_id_fkey,
	DROP CONSTRAINT sealed_key_server_public_key_fkey;
ALTER TABLE pgcrypt_at_rest.data_key
	DROP CONSTRAINT data_key_keyring_id_fkey;

------------------------------------------------------------------------------
-- The owner a context expression was declared for, as a role: checked by
-- OID, dumped by name.  A declaration for a role that no longer exists could
-- never be used again, and is dropped.
------------------------------------------------------------------------------

ALTER TABLE pgcrypt_at_rest.column_context ADD COLUMN owner_role regrole;
UPDATE pgcrypt_at_rest.column_context c SET owner_role = r.oid
  FROM pg_catalog.pg_roles r WHERE r.rolname = c.table_owner;
DELETE FROM pgcrypt_at_rest.column_context WHERE owner_role IS NULL;
ALTER TABLE pgcrypt_at_rest.column_context DROP COLUMN table_owner;
ALTER TABLE pgcrypt_at_rest.column_context RENAME COLUMN owner_role TO table_owner;
ALTER TABLE pgcrypt_at_rest.column_context ALTER COLUMN table_owner SET NOT NULL;

------------------------------------------------------------------------------
-- Views
------------------------------------------------------------------------------

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
			 AS restored
	  FROM pgcrypt_at_rest.data_key k
	  JOIN pgcrypt_at_rest.keyring r ON r.id = k.keyring_id;

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
		   pgcrypt_at_rest._destruction_hold(k.installation) AS destruction_held
	  FROM pgcrypt_at_rest.data_key k
	  JOIN pgcrypt_at_rest.keyring r ON r.id = k.keyring_id
	  LEFT JOIN pgcrypt_at_rest.rotation_progress p
		ON p.key_id = k.id AND (p.remaining > 0 OR p.reencrypted > 0 OR p.last_error IS NOT NULL)
	  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = p.relid AND a.attnum = p.attnum
	 WHERE k.status = 'deprecated';

-- Wakes the launcher when this commits (registering again changes nothing).
SELECT pgcrypt_at_rest._register_local_server();
