-- bench/rotation_setup.sql: the table to rotate, the result tables, and the
-- routines that time a bare UPDATE and a drain by the rotation worker.
-- Run by bench/rotation.sh with psql variable rows.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE EXTENSION pgcrypt_at_rest;
CREATE EXTENSION pg_prewarm;
SELECT pgcrypt_at_rest.create_keyring('ring') AS first_key_id \gset

CREATE SCHEMA bench;

------------------------------------------------------------------------------
-- Data.  100-byte values (distinct, derived from the id) under the keyring's
-- first key.  A logged table with a primary key, as an application's would
-- be: WAL and index maintenance are part of what a rotation costs, for the
-- bare UPDATE and for the worker alike.  Autovacuum is off in this cluster;
-- bench/rotation.sh rewrites, freezes and caches the table before each
-- measurement, so each one starts from the same compact, cached table.
------------------------------------------------------------------------------

CREATE TABLE bench.t (
	id integer PRIMARY KEY,
	v pgcrypt_at_rest.encrypted NOT NULL
);

INSERT INTO bench.t
SELECT i, pgcrypt_at_rest.encrypt(substr(sha512(int4send(i)) || sha512(int4send(-i)), 1, 100), 'ring')
  FROM generate_series(1, :rows) AS i;

DO $$
BEGIN
	IF EXISTS (SELECT FROM bench.t
				WHERE pgcrypt_at_rest.decrypt(v) <> substr(sha512(int4send(id)) || sha512(int4send(-id)), 1, 100)
				   OR octet_length(pgcrypt_at_rest.decrypt(v)) <> 100
				LIMIT 1)
	THEN
		RAISE EXCEPTION 'benchmark data does not round-trip';
	END IF;
END
$$;

------------------------------------------------------------------------------
-- Results
------------------------------------------------------------------------------

-- One re-encryption of the whole table: by one UPDATE, or by the worker
-- after a rotate_keyring().  done_at: the last value re-encrypted (for the
-- worker, first seen by a poll every 0.1 s); drained_at: when the worker
-- marked the old key drained (pass end, a recount, a round waiting for
-- older transactions, a recount again).
CREATE TABLE bench.reencryption (
	ord serial PRIMARY KEY,
	kind text NOT NULL CHECK (kind IN ('bare', 'unthrottled', 'throttled')),
	label text NOT NULL,
	batch_size integer,
	delay_ms integer,
	rows bigint NOT NULL,
	old_key integer NOT NULL,
	new_key integer NOT NULL,
	started_at timestamptz NOT NULL,
	done_at timestamptz,
	drained_at timestamptz,
	left_over bigint			-- values under old_key when the worker's count said none: must be 0
);

-- pgbench runs: 'before' (no drain running) and 'during' (the worker
-- draining at default throttling).  For 'during', the worker's progress on
-- bench.t when the run started and ended.  The CPU figures are from /proc.
CREATE TABLE bench.pgbench_run (
	ord serial PRIMARY KEY,
	run integer NOT NULL,
	phase text NOT NULL CHECK (phase IN ('before', 'during')),
	seconds integer NOT NULL,
	tps float8 NOT NULL,
	reencrypted_at_start bigint,
	reencrypted_at_end bigint,
	remaining_at_end bigint,
	worker_cores float8,		-- CPU the worker used, in cores (1 = one core busy)
	others_cores float8			-- CPU used outside this benchmark (other users of the machine)
);

------------------------------------------------------------------------------
-- Routines
------------------------------------------------------------------------------

CREATE FUNCTION bench.setting(setting_name text) RETURNS integer LANGUAGE sql STABLE
	RETURN (SELECT s.setting::integer FROM pg_settings s WHERE s.name = setting_name);

-- Values re-encrypted so far from bench.t by the worker, from key_id, as
-- the worker records them per batch (cheap: no scan of bench.t).
CREATE FUNCTION bench.reencrypted(from_key integer) RETURNS bigint LANGUAGE sql STABLE
	RETURN (SELECT coalesce(sum(p.reencrypted), 0)::bigint
			  FROM pgcrypt_at_rest.rotation_progress p
			 WHERE p.key_id = from_key AND p.relid = 'bench.t'::regclass);

-- The bare UPDATE: one statement re-encrypting every value under the
-- keyring's active key (the same work per row as a rotation: one decrypt,
-- one encrypt), committed.  The table is restored afterwards by the caller.
CREATE PROCEDURE bench.time_bare_update()
LANGUAGE plpgsql AS $$
DECLARE
	active integer := (SELECT active_key_id FROM pgcrypt_at_rest.keyrings WHERE name = 'ring');
	t0 timestamptz;
	t1 timestamptz;
	n bigint;
BEGIN
	COMMIT;
	t0 := clock_timestamp();
	UPDATE bench.t SET v = pgcrypt_at_rest.encrypt(pgcrypt_at_rest.decrypt(v), 'ring');
	GET DIAGNOSTICS n = ROW_COUNT;
	COMMIT;
	t1 := clock_timestamp();
	INSERT INTO bench.reencryption (kind, label, rows, old_key, new_key, started_at, done_at, left_over)
	VALUES ('bare', 'bare UPDATE (one statement)', n, active, active, t0, t1, 0);
	COMMIT;
END
$$;

-- Rotates 'ring' and notes the run; the worker wakes at commit, which
-- follows at once (psql autocommit).  Returns the run's ord.
CREATE FUNCTION bench.start_rotation(kind text, label text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	from_key integer := (SELECT active_key_id FROM pgcrypt_at_rest.keyrings WHERE name = 'ring');
	n bigint := (SELECT count(*) FROM bench.t WHERE pgcrypt_at_rest.key_id(v) = from_key);
	to_key integer;
	result integer;
BEGIN
	IF n <> (SELECT count(*) FROM bench.t) THEN
		RAISE EXCEPTION 'only % of the values are under the active key %', n, from_key;
	END IF;
	to_key := pgcrypt_at_rest.rotate_keyring('ring');
	INSERT INTO bench.reencryption (kind, label, batch_size, delay_ms, rows, old_key, new_key, started_at)
	VALUES (kind, label, bench.setting('pgcrypt_at_rest.rotation_batch_size'),
			bench.setting('pgcrypt_at_rest.rotation_delay'), n, from_key, to_key, clock_timestamp())
	RETURNING ord INTO result;
	RETURN result;
END
$$;

-- Waits until the worker has re-encrypted every value of run ord (polling
-- its progress every 0.1 s), checks with a full scan that none is left under
-- the old key, then waits (at most 60 s) for the key to be marked drained.
-- Progress on stderr every 5 s.  Each poll is a transaction of its own.
CREATE PROCEDURE bench.wait_drain(run integer, timeout_s integer)
LANGUAGE plpgsql AS $$
DECLARE
	r bench.reencryption;
	done bigint;
	still_old bigint;
	drained timestamptz;
	finished timestamptz;
	next_notice timestamptz := clock_timestamp() + interval '5 s';
	worker_error text;
BEGIN
	SELECT * INTO STRICT r FROM bench.reencryption WHERE ord = run;
	LOOP
		done := bench.reencrypted(r.old_key);
		EXIT WHEN done >= r.rows;
		IF clock_timestamp() > next_notice THEN
			SELECT max(last_error) INTO worker_error FROM pgcrypt_at_rest.rotation_progress
			 WHERE key_id = r.old_key AND last_error IS NOT NULL;
			RAISE NOTICE '%: % s, % of % rows re-encrypted%', r.label,
				round(extract(epoch FROM clock_timestamp() - r.started_at)), done, r.rows,
				coalesce(' (worker error: ' || worker_error || ')', '');
			next_notice := clock_timestamp() + interval '5 s';
		END IF;
		IF clock_timestamp() > r.started_at + make_interval(secs => timeout_s) THEN
			RAISE EXCEPTION '%: % of % rows re-encrypted after % s', r.label, done, r.rows, timeout_s;
		END IF;
		COMMIT;
		PERFORM pg_sleep(0.1);
	END LOOP;
	finished := clock_timestamp();

	-- the truth, with a full scan: the worker's own count could be wrong
	still_old := (SELECT count(*) FROM bench.t WHERE pgcrypt_at_rest.key_id(v) = r.old_key);
	UPDATE bench.reencryption SET left_over = still_old WHERE ord = run;
	IF still_old > 0 THEN
		RAISE WARNING '%: the worker counts % rows re-encrypted, but % are still under key %',
			r.label, done, still_old, r.old_key;
		WHILE still_old > 0 LOOP
			IF clock_timestamp() > r.started_at + make_interval(secs => timeout_s) THEN
				RAISE EXCEPTION '%: % rows still under key % after % s', r.label, still_old, r.old_key, timeout_s;
			END IF;
			COMMIT;
			PERFORM pg_sleep(0.5);
			still_old := (SELECT count(*) FROM bench.t WHERE pgcrypt_at_rest.key_id(v) = r.old_key);
		END LOOP;
		finished := clock_timestamp();
	END IF;
	UPDATE bench.reencryption SET done_at = finished WHERE ord = run;
	COMMIT;

	LOOP
		SELECT k.drained_at INTO drained FROM pgcrypt_at_rest.data_key k WHERE k.id = r.old_key;
		EXIT WHEN drained IS NOT NULL OR clock_timestamp() > finished + interval '60 s';
		COMMIT;
		PERFORM pg_sleep(0.1);
	END LOOP;
	UPDATE bench.reencryption SET drained_at = drained WHERE ord = run;
	COMMIT;
END
$$;
