-- bench/rotation_report.sql: the tables of results and the check of the targets.
\set ON_ERROR_STOP on
\pset footer off
\pset null ''

CREATE TEMP VIEW reencryption AS
SELECT r.*,
	   extract(epoch FROM r.done_at - r.started_at) AS seconds,
	   r.rows / nullif(extract(epoch FROM r.done_at - r.started_at), 0) AS rows_per_s,
	   extract(epoch FROM r.drained_at - r.started_at) AS to_drained
  FROM bench.reencryption AS r
 WHERE r.kind IN ('bare', 'unthrottled');

CREATE TEMP VIEW bare AS
SELECT rows_per_s FROM reencryption WHERE kind = 'bare' ORDER BY ord DESC LIMIT 1;

-- A 'during' run counts only if the worker was re-encrypting when it
-- started (it had made progress) and still had values left when it ended.
CREATE TEMP VIEW pgbench_pair AS
SELECT b.run,
	   b.seconds,
	   b.tps AS tps_before,
	   d.tps AS tps_during,
	   d.reencrypted_at_end - d.reencrypted_at_start AS drained_rows,
	   (d.reencrypted_at_end - d.reencrypted_at_start)::float8 / d.seconds AS drain_rows_per_s,
	   d.reencrypted_at_start > 0 AND d.remaining_at_end > 0 AS covered,
	   d.worker_cores,
	   b.others_cores AS others_before,
	   d.others_cores AS others_during
  FROM bench.pgbench_run AS b
  JOIN bench.pgbench_run AS d ON d.run = b.run AND d.phase = 'during'
 WHERE b.phase = 'before';

CREATE TEMP VIEW pgbench_best AS
SELECT max(tps_before) AS tps_before,
	   max(tps_during) FILTER (WHERE covered) AS tps_during,
	   max(tps_during) FILTER (WHERE covered) / nullif(max(tps_before), 0) AS ratio,
	   count(*) AS runs,
	   count(*) FILTER (WHERE covered) AS covered_runs
  FROM pgbench_pair;

\echo
\echo 're-encrypting every value of bench.t (100-byte values) once; the worker with rotation_delay 0;'
\echo 'seconds: from the commit of rotate_keyring() to the last value re-encrypted (polled every 0.1 s);'
\echo 'to drained: to the old key marked drained (pass end, recounts, waiting for older transactions)'
SELECT r.label AS method,
	   coalesce(r.batch_size::text, '-') AS batch,
	   coalesce(r.delay_ms::text || ' ms', '-') AS delay,
	   r.rows,
	   to_char(r.seconds, 'FM999990.00') AS seconds,
	   to_char(r.rows_per_s, 'FM999999990') AS "rows/s",
	   to_char(r.rows_per_s / nullif(b.rows_per_s, 0), 'FM990.00') || 'x' AS "vs bare UPDATE",
	   coalesce(to_char(r.to_drained, 'FM999990.0'), CASE WHEN r.kind = 'bare' THEN '-' ELSE 'not within 60 s' END) AS "s to drained",
	   CASE WHEN r.left_over > 0 THEN r.left_over || ' rows left when the worker counted none' ELSE '' END AS check
  FROM reencryption AS r, bare AS b
 ORDER BY r.ord;

\echo
\echo 'pgbench TPC-B-like TPS (schema pgb), before a drain and during one at default throttling;'
\echo '"worker CPU": of one core, during the run; "others CPU": cores busy outside this benchmark'
\echo '(other users of the machine) before / during: where it is not near 0, the TPS are noisy;'
\echo '"drain ran throughout": the worker had begun before the run and had values left after it'
SELECT p.run::text AS run,
	   p.seconds || ' s' AS "length",
	   to_char(p.tps_before, 'FM999999990.0') AS "TPS before",
	   to_char(p.tps_during, 'FM999999990.0') AS "TPS during",
	   to_char(p.tps_during / nullif(p.tps_before, 0), 'FM990.00') || 'x' AS ratio,
	   to_char(100 * p.worker_cores, 'FM990.0') || '%' AS "worker CPU",
	   to_char(greatest(p.others_before, 0), 'FM990.00') || ' / ' ||
	   to_char(greatest(p.others_during, 0), 'FM990.00') AS "others CPU",
	   p.drained_rows AS "rows re-encrypted",
	   to_char(p.drain_rows_per_s, 'FM999999990') AS "drain rows/s",
	   CASE WHEN p.covered THEN 'yes' ELSE 'NO: not counted' END AS "drain ran throughout"
  FROM pgbench_pair AS p
UNION ALL
SELECT 'best of ' || b.runs, '',
	   to_char(b.tps_before, 'FM999999990.0'),
	   coalesce(to_char(b.tps_during, 'FM999999990.0'), '-'),
	   coalesce(to_char(b.ratio, 'FM990.00') || 'x', '-'),
	   '', '', NULL, '', b.covered_runs || ' of ' || b.runs || ' counted'
  FROM pgbench_best AS b
 WHERE b.runs > 1;

\echo
\echo 'targets'
SELECT t.target,
	   coalesce(to_char(t.ratio, 'FM990.00') || 'x', '-') AS measured,
	   CASE WHEN t.ratio IS NULL THEN 'NOT MEASURED'
			WHEN t.ratio >= t.limit_ THEN 'met' ELSE 'NOT MET' END AS verdict,
	   coalesce(to_char(100 * (t.ratio - t.limit_) / t.limit_, 'FMS990.0') || '%', '') AS margin
  FROM (SELECT 1, 'worker (batch 500, delay 0) rows/s >= 0.50x bare UPDATE', 0.50,
			   (SELECT r.rows_per_s / nullif(b.rows_per_s, 0)
				  FROM reencryption AS r, bare AS b
				 WHERE r.kind = 'unthrottled' AND r.batch_size = 500 AND r.left_over = 0
				 ORDER BY r.ord LIMIT 1)
		UNION ALL
		SELECT 2, 'pgbench TPS during a default drain >= 0.90x before', 0.90,
			   (SELECT ratio FROM pgbench_best)) AS t (o, target, limit_, ratio)
 ORDER BY t.o;
