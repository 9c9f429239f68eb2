/* pgcrypt_at_rest--1.0--1.1.sql: rotation by a background worker */

\echo Use "ALTER EXTENSION pgcrypt_at_rest UPDATE TO '1.1'" to load this file. \quit

------------------------------------------------------------------------------
-- Policies, counts and drain state
------------------------------------------------------------------------------

-- Rotate by age or by number of encryptions (either may be NULL: no limit).
ALTER TABLE pgcrypt_at_rest.keyring
	ADD COLUMN rotate_after interval CHECK (rotate_after > interval '0'),
	ADD COLUMN max_encryptions bigint CHECK (max_encryptions > 0);

-- encryptions: values encrypted under the key, approximately (persisted by
-- the worker every nap).  drained_at: when a round after a full pass first
-- found no value under this deprecated key.
ALTER TABLE pgcrypt_at_rest.data_key
	ADD COLUMN encryptions bigint NOT NULL DEFAULT 0,
	ADD COLUMN drained_at timestamptz,
	ADD CHECK (drained_at IS NULL OR status <> 'active');

-- Where a column's context comes from: an expression over its row, giving
-- bytea, evaluated by the worker as the table's owner.  It is used only
-- while the table has the owner it was declared for: an expression must
-- never run with the rights of a later, more privileged owner.  Names, not
-- OIDs, so it survives dump and restore.
CREATE TABLE pgcrypt_at_rest.column_context (
	table_schema name NOT NULL,
	table_name name NOT NULL,
	column_name name NOT NULL,
	context_expression text NOT NULL,
	table_owner name NOT NULL,
	PRIMARY KEY (table_schema, table_name, column_name)
);
SELECT pg_catalog.pg_extension_config_dump('pgcrypt_at_rest.column_context', '');
REVOKE ALL ON pgcrypt_at_rest.column_context FROM PUBLIC;

-- Where the current pass stands (at most one row): the column, and the
-- last row visited in it.  Not dumped: it describes this database's rows as
-- they are.
CREATE TABLE pgcrypt_at_rest.rotation_pass (
	one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
	relid oid NOT NULL,
	attnum int2 NOT NULL,
	resume_after tid NOT NULL,
	started_at timestamptz NOT NULL DEFAULT now()
);

-- Per deprecated key and column: what is left, what was done, what cannot be.
CREATE TABLE pgcrypt_at_rest.rotation_progress (
	key_id integer NOT NULL REFERENCES pgcrypt_at_rest.data_key (id) ON DELETE CASCADE,
	relid oid NOT NULL,
	attnum int2 NOT NULL,
	remaining bigint,
	reencrypted bigint NOT NULL DEFAULT 0,
	unrotatable bigint NOT NULL DEFAULT 0,
	unrotatable_reason text,
	started_at timestamptz NOT NULL DEFAULT now(),
	counted_at timestamptz,
	last_batch_at timestamptz,
	last_error text,
	last_error_at timestamptz,
	PRIMARY KEY (key_id, relid, attnum)
);
REVOKE ALL ON pgcrypt_at_rest.rotation_pass, pgcrypt_at_rest.rotation_progress FROM PUBLIC;

------------------------------------------------------------------------------
-- Functions
------------------------------------------------------------------------------

CREATE FUNCTION pgcrypt_at_rest.deprecate_key(key_id integer)
RETURNS void
AS 'MODULE_PATHNAME', 'pcar_deprecate_key'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION pgcrypt_at_rest.alter_keyring(name text, rotate_after interval, max_encryptions bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'pcar_alter_keyring'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION pgcrypt_at_rest.set_column_context(column_table regclass, column_name name,
												   context_expression text)
RETURNS void
AS 'MODULE_PATHNAME', 'pcar_set_column_context'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION pgcrypt_at_rest.drain()
RETURNS bigint
AS 'MODULE_PATHNAME', 'pcar_drain'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION pgcrypt_at_rest.destroy_drained_keys()
RETURNS integer[]
AS 'MODULE_PATHNAME', 'pcar_destroy_drained_keys_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION pgcrypt_at_rest.deprecate_key(integer) IS
	'mark a key deprecated (an active key is replaced first); the worker drains and destroys it';
COMMENT ON FUNCTION pgcrypt_at_rest.alter_keyring(text, interval, bigint) IS
	'set when the worker rotates a keyring by itself: by age, by encryptions, or never (NULL)';
COMMENT ON FUNCTION pgcrypt_at_rest.set_column_context(regclass, name, text) IS
	'declare the expression over a row that gives its column''s context, or forget it (NULL)';
COMMENT ON FUNCTION pgcrypt_at_rest.drain() IS
	're-encrypt now, in this transaction, every value under a deprecated key; returns how many';
COMMENT ON FUNCTION pgcrypt_at_rest.destroy_drained_keys() IS
	'destroy now the deprecated keys no value needs, after waiting for older transactions';

REVOKE ALL ON FUNCTION
	pgcrypt_at_rest.deprecate_key(integer),
	pgcrypt_at_rest.alter_keyring(text, interval, bigint),
	pgcrypt_at_rest.drain(),
	pgcrypt_at_rest.destroy_drained_keys()
	FROM PUBLIC;

------------------------------------------------------------------------------
-- Views
------------------------------------------------------------------------------

CREATE OR REPLACE VIEW pgcrypt_at_rest.keyrings AS
	SELECT r.name,
		   (SELECT k.id FROM pgcrypt_at_rest.data_key k
			 WHERE k.keyring_id = r.id AND k.status = 'active') AS active_key_id,
		   (SELECT count(*) FROM pgcrypt_at_rest.data_key k
			 WHERE k.keyring_id = r.id AND k.status = 'deprecated') AS deprecated_keys,
		   r.created_at,
		   r.rotate_after,
		   r.max_encryptions
	  FROM pgcrypt_at_rest.keyring r;

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
		   k.drained_at
	  FROM pgcrypt_at_rest.data_key k
	  JOIN pgcrypt_at_rest.keyring r ON r.id = k.keyring_id;

-- One row per deprecated key and column holding values under it (or one
-- row with no column when none was counted yet or none is left).
CREATE VIEW pgcrypt_at_rest.rotation_status AS
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
		   k.drained_at
	  FROM pgcrypt_at_rest.data_key k
	  JOIN pgcrypt_at_rest.keyring r ON r.id = k.keyring_id
	  LEFT JOIN pgcrypt_at_rest.rotation_progress p
		ON p.key_id = k.id AND (p.remaining > 0 OR p.reencrypted > 0 OR p.last_error IS NOT NULL)
	  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = p.relid AND a.attnum = p.attnum
	 WHERE k.status = 'deprecated';

COMMENT ON VIEW pgcrypt_at_rest.rotation_status IS
	'per deprecated key and column: values left, re-encrypted, impossible to rotate and why';

-- Wakes the launcher when this commits, so this database's rotation worker
-- starts now rather than a nap later (registering again changes nothing).
SELECT pgcrypt_at_rest._register_local_server();
