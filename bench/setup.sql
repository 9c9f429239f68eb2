-- bench/setup.sql: extensions, data and the list of measurements.
-- Run by bench/run.sh with psql variables rows100 and rows4k.
--
-- Every measurement is a query of the same shape,
--     SELECT sum(<cheap int function>(<per-row expression>)) FROM <table>
-- so that the difference between two of them is the cost of the per-row
-- expression alone.  The result is one row: nothing is sent per row.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE EXTENSION pgcrypt_at_rest;
CREATE SCHEMA pgc;
CREATE EXTENSION pgcrypto SCHEMA pgc;
SELECT pgcrypt_at_rest.create_keyring('bench') AS bench_key_id \gset

CREATE SCHEMA bench;

-- pgcrypto's raw encrypt()/decrypt() use this fixed 256-bit key, the size of
-- our data keys: 'aes' is then AES-256-CBC with PKCS padding and a zero IV
-- (no nonce, no authentication: a cheaper job than ours).
CREATE FUNCTION bench.aes_key_literal() RETURNS text LANGUAGE sql IMMUTABLE
	RETURN quote_literal('\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f') || '::bytea';

------------------------------------------------------------------------------
-- Data.  Each table holds the plaintext v and, for the decrypt measurements,
-- the same plaintext encrypted by pgcrypto (pc) and by us (e).  Unlogged and
-- frozen: loading skips WAL and scans never set hint bits.
------------------------------------------------------------------------------

-- 100-byte values: a row is about 400 bytes, far below the 2 kB TOAST
-- threshold, so all three columns stay inline even though "encrypted" has
-- STORAGE external.
CREATE UNLOGGED TABLE bench.t100 (
	id integer NOT NULL,
	v bytea NOT NULL,
	pc bytea NOT NULL,
	e pgcrypt_at_rest.encrypted NOT NULL
) WITH (autovacuum_enabled = off);

INSERT INTO bench.t100
SELECT i, v,
	   pgc.encrypt(v, '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes'),
	   pgcrypt_at_rest.encrypt(v, 'bench')
  FROM (SELECT i, pgc.gen_random_bytes(100) AS v
		  FROM generate_series(1, :rows100) AS i) AS s;

-- 4 kB values: whatever the storage, three of them cannot share an 8 kB
-- page, and realistically they are TOASTed (out of line, uncompressed:
-- random bytes and ciphertext do not compress, and "encrypted" is STORAGE
-- external anyway).  So every 4 kB measurement, the plain scans included,
-- fetches and reassembles a TOASTed value; see the scan queries below.
CREATE UNLOGGED TABLE bench.t4k (
	id integer NOT NULL,
	v bytea NOT NULL,
	pc bytea NOT NULL,
	e pgcrypt_at_rest.encrypted NOT NULL
) WITH (autovacuum_enabled = off, toast.autovacuum_enabled = off);
ALTER TABLE bench.t4k ALTER COLUMN v SET STORAGE EXTERNAL,
					  ALTER COLUMN pc SET STORAGE EXTERNAL;

INSERT INTO bench.t4k
SELECT i, v,
	   pgc.encrypt(v, '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes'),
	   pgcrypt_at_rest.encrypt(v, 'bench')
  FROM (SELECT i, pgc.gen_random_bytes(1024) || pgc.gen_random_bytes(1024) ||
				  pgc.gen_random_bytes(1024) || pgc.gen_random_bytes(1024) AS v
		  FROM generate_series(1, :rows4k) AS i) AS s;

VACUUM (FREEZE, ANALYZE) bench.t100, bench.t4k;

-- Sanity: the stored ciphertexts decrypt to the plaintexts, for both kinds.
DO $$
BEGIN
	IF EXISTS (SELECT FROM bench.t100
				WHERE pgcrypt_at_rest.decrypt(e) <> v
				   OR pgc.decrypt(pc, '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes') <> v
				LIMIT 1)
	   OR EXISTS (SELECT FROM bench.t4k
				   WHERE pgcrypt_at_rest.decrypt(e) <> v
					  OR pgc.decrypt(pc, '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes') <> v
				   LIMIT 1)
	   OR (SELECT count(*) FROM bench.t4k WHERE octet_length(v) <> 4096) > 0
	THEN
		RAISE EXCEPTION 'benchmark data does not round-trip';
	END IF;
END
$$;

------------------------------------------------------------------------------
-- Measurements
------------------------------------------------------------------------------

CREATE TABLE bench.measurement (
	ord integer PRIMARY KEY,
	tab text NOT NULL,			-- t100 or t4k
	rows bigint NOT NULL,
	label text NOT NULL,
	baseline text,				-- label of the scan subtracted; NULL for a scan
	query text NOT NULL,
	times_ms float8[] NOT NULL DEFAULT '{}'
);

-- The plain scans read one column through get_byte(col, 0), which detoasts
-- the whole value (PG_GETARG_BYTEA_PP) and returns one byte: for 100-byte
-- inline values that is just the scan and tuple deforming; for 4 kB values it
-- is also the TOAST fetch that the measured functions pay when they read
-- their argument.  Subtracting the scan of the same column thus leaves only
-- the function's own work.  (octet_length(col) would not do: it reads the
-- length from the TOAST pointer without fetching the value.)  Each measured
-- query wraps its function in octet_length(), as cheap as get_byte().
INSERT INTO bench.measurement (ord, tab, rows, label, baseline, query)
SELECT row_number() OVER (ORDER BY t.o, m.o), t.tab, t.n, m.label, m.baseline,
	   format(m.q, 'bench.' || t.tab, bench.aes_key_literal())
  FROM (VALUES (1, 't100', :rows100::bigint), (2, 't4k', :rows4k::bigint)) AS t (o, tab, n),
	   (VALUES
		(1, 'scan v (plaintext)', NULL,
		 'SELECT sum(get_byte(v, 0)) FROM %1$s'),
		(2, 'scan pc (pgcrypto ct)', NULL,
		 'SELECT sum(get_byte(pc, 0)) FROM %1$s'),
		(3, 'scan e (our ct)', NULL,
		 'SELECT sum(get_byte(e::bytea, 0)) FROM %1$s'),
		(4, 'md5(v)', 'scan v (plaintext)',
		 'SELECT sum(octet_length(md5(v))) FROM %1$s'),
		(5, 'pgcrypto encrypt(v)', 'scan v (plaintext)',
		 'SELECT sum(octet_length(pgc.encrypt(v, %2$s, ''aes''))) FROM %1$s'),
		(6, 'pgcrypto decrypt(pc)', 'scan pc (pgcrypto ct)',
		 'SELECT sum(octet_length(pgc.decrypt(pc, %2$s, ''aes''))) FROM %1$s'),
		(7, 'ours encrypt(v)', 'scan v (plaintext)',
		 'SELECT sum(octet_length(pgcrypt_at_rest.encrypt(v, ''bench'')::bytea)) FROM %1$s'),
		(8, 'ours decrypt(e)', 'scan e (our ct)',
		 'SELECT sum(octet_length(pgcrypt_at_rest.decrypt(e))) FROM %1$s')
	   ) AS m (o, label, baseline, q)
 WHERE t.n > 0;

-- Wall-clock milliseconds of one execution (plan included: well under 1 ms).
CREATE FUNCTION bench.time_query(q text) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	result bigint;
BEGIN
	t0 := clock_timestamp();
	EXECUTE q INTO result;
	RETURN 1000 * extract(epoch FROM clock_timestamp() - t0);
END
$$;

-- Round 0 warms caches and is discarded; rounds 1..runs are recorded.
-- Rounds run every measurement in turn, so a disturbance from outside
-- (another process on the machine) hits one run of several measurements
-- rather than every run of one.
CREATE PROCEDURE bench.run(runs integer)
LANGUAGE plpgsql AS $$
DECLARE
	m record;
	ms float8;
BEGIN
	FOR r IN 0 .. runs LOOP
		FOR m IN SELECT ord, tab, label, query FROM bench.measurement ORDER BY ord LOOP
			ms := bench.time_query(m.query);
			IF r > 0 THEN
				UPDATE bench.measurement SET times_ms = times_ms || ms WHERE ord = m.ord;
			END IF;
			RAISE NOTICE 'round %/% %: % ms', r, runs,
				rpad(m.tab || ' ' || m.label, 28), round(ms::numeric, 1);
		END LOOP;
		COMMIT;
	END LOOP;
END
$$;
