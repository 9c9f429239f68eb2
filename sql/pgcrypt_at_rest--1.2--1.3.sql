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
