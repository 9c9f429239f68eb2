-- bench/report.sql: the table of results and the check of the targets.
-- Each measurement's time is the best of its recorded runs (noise from the
-- machine only ever adds time); "spread" is (worst - best) / best.
\set ON_ERROR_STOP on
\pset footer off
\pset null ''

CREATE TEMP VIEW result AS
WITH best AS (
	SELECT m.ord, m.tab, m.rows, m.label, m.baseline,
		   (SELECT min(t) FROM unnest(m.times_ms) AS t) * 1e6 / m.rows AS ns,
		   (SELECT (max(t) - min(t)) / min(t) FROM unnest(m.times_ms) AS t) AS spread,
		   cardinality(m.times_ms) AS runs
	  FROM bench.measurement AS m
), above AS (
	SELECT b.*, b.ns - s.ns AS above
	  FROM best AS b
	  LEFT JOIN best AS s ON s.tab = b.tab AND s.label = b.baseline
)
SELECT a.*,
	   a.above / nullif(md5.above, 0) AS vs_md5,
	   CASE a.label
		   WHEN 'ours encrypt(v)' THEN a.above / nullif(pe.above, 0)
		   WHEN 'ours decrypt(e)' THEN a.above / nullif(pd.above, 0)
	   END AS vs_pgcrypto
  FROM above AS a
  LEFT JOIN above AS md5 ON md5.tab = a.tab AND md5.label = 'md5(v)'
  LEFT JOIN above AS pe ON pe.tab = a.tab AND pe.label = 'pgcrypto encrypt(v)'
  LEFT JOIN above AS pd ON pd.tab = a.tab AND pd.label = 'pgcrypto decrypt(pc)';

\echo
\echo 'ns per row; "above scan" subtracts the plain scan of the column the function reads;'
\echo 'ratios compare "above scan" costs: vs md5 = this / md5(v), vs pgcrypto = ours / pgcrypto (same operation)'
SELECT CASE tab WHEN 't100' THEN '100 B' ELSE '4 kB' END AS "value",
	   label AS measurement,
	   rows,
	   to_char(ns, 'FM999999990.0') AS "ns/row",
	   coalesce(to_char(above, 'FM999999990.0'), '-') AS "ns/row above scan",
	   coalesce(to_char(vs_md5, 'FM990.00') || 'x', '') AS "vs md5",
	   coalesce(to_char(vs_pgcrypto, 'FM990.00') || 'x', '') AS "vs pgcrypto",
	   to_char(100 * spread, 'FM990.0') || '%' AS spread
  FROM result
 ORDER BY ord;

\echo
\echo 'targets (100-byte values, ns/row above a plain scan)'
SELECT t.target,
	   to_char(r.ratio, 'FM990.00') || 'x' AS measured,
	   CASE WHEN r.ratio <= t.limit_ THEN 'met' ELSE 'NOT MET' END AS verdict,
	   -- how far below (+) or above (-) the limit, relative to it: compare
	   -- with the spread above before reading much into a few percent
	   to_char(100 * (t.limit_ - r.ratio) / t.limit_, 'FMS990.0') || '%' AS margin
  FROM (VALUES
		(1, 'ours decrypt <= 0.90x md5', 'ours decrypt(e)', 'md5', 0.90),
		(2, 'ours decrypt <= 0.75x pgcrypto decrypt', 'ours decrypt(e)', 'pgcrypto', 0.75),
		(3, 'ours encrypt <= 1.00x md5', 'ours encrypt(v)', 'md5', 1.00)
	   ) AS t (o, target, label, versus, limit_)
  JOIN LATERAL (SELECT CASE t.versus WHEN 'md5' THEN vs_md5 ELSE vs_pgcrypto END AS ratio
				  FROM result WHERE tab = 't100' AND label = t.label) AS r ON true
 ORDER BY t.o;

