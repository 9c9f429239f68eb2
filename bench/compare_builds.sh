#!/usr/bin/env bash
# Compares two builds of pgcrypt_at_rest side by side on one throwaway
# cluster: a git revision (BEFORE) and the working tree (or AFTER), for a
# change that must not move performance, such as a restructuring.
#
#   bash bench/compare_builds.sh BEFORE [AFTER]
#
# Both are built in directories of their own.  Each round installs one
# build's library, restarts the cluster, warms up and measures, then the
# other (the order alternating between rounds), for BENCH_RUNS rounds, so
# both see the same machine in turn; the table shows the median of each
# measurement and after/before:
#
#   encrypt   encrypt() of every 100-byte value of a table (best of 3)
#   decrypt   decrypt() of every value of that table (best of 3)
#   drain     rotate_keyring(), then drain(): every value re-encrypted by
#             the worker's batches, run in the session
#   destroy   destroy_drained_keys() right after: the final count and the
#             destruction of the drained key
#
# As root on Debian 12 (installs what is missing).  The SQL objects are the
# installed ones: the two builds must share their install scripts.  About
# four minutes at the defaults.
#
# Environment:
#   BENCH_ROWS=500000  rows of 100-byte values (default 500000)
#   BENCH_RUNS=5       rounds (default 5)
#   BENCH_PORT=54331   the cluster's private port
set -euo pipefail
. "$(dirname "$0")/../scripts/common.sh"

BEFORE=${1:?usage: compare_builds.sh BEFORE [AFTER]}
AFTER=${2:-}
BENCH_ROWS=${BENCH_ROWS:-500000}
BENCH_RUNS=${BENCH_RUNS:-5}
BENCH_PORT=${BENCH_PORT:-54331}

need_root
install_dependencies
build_and_install

builds=$(mktemp -d /tmp/pgcrypt_at_rest-builds.XXXXXX)
pkglibdir=$("$PG_CONFIG" --pkglibdir)

# build_rev NAME REV: a build of REV (empty: the working tree) in $builds/NAME.
build_rev() {
	local name=$1 rev=$2
	mkdir -p "$builds/$name"
	if [ -n "$rev" ]; then
		git -C "$REPO_DIR" archive "$rev" | tar -x -C "$builds/$name"
	else
		tar -C "$REPO_DIR" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
			-cf - . | tar -C "$builds/$name" -xf -
	fi
	make -C "$builds/$name" -s PG_CONFIG="$PG_CONFIG" >/dev/null
	echo "$name: ${rev:-the working tree}"
}
log "building both"
build_rev before "$BEFORE"
build_rev after "$AFTER"

start_throwaway_cluster compare "$BENCH_PORT" "shared_buffers = 512MB
max_parallel_workers_per_gather = 0
jit = off
autovacuum = off
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
checkpoint_timeout = 1h
pgcrypt_at_rest.worker_enabled = off
pgcrypt_at_rest.destroy_grace = 0
pgcrypt_at_rest.rotation_batch_size = 5000"
# at exit: the cluster goes, and the working tree's build is installed again
trap 'stop_throwaway_cluster; install -m 755 "$REPO_DIR/pgcrypt_at_rest.so" "$pkglibdir/"; rm -rf "$builds"' EXIT

psql_compare() {
	as_postgres psql -X -q -At -h "$CLUSTER_DIR" -p "$BENCH_PORT" -d postgres -v ON_ERROR_STOP=1 "$@"
}

use_build() {
	install -m 755 "$builds/$1/pgcrypt_at_rest.so" "$pkglibdir/pgcrypt_at_rest.so"
	as_postgres pg_ctl -D "$CLUSTER_DATA" -w restart >/dev/null
}

use_build after
psql_compare <<SQL
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('bench');
CREATE TABLE plain AS SELECT i AS id, repeat(md5(i::text), 4)::text AS v
  FROM generate_series(1, $BENCH_ROWS) i;
CREATE TABLE t AS SELECT id, pgcrypt_at_rest.encrypt(v, 'bench') AS e FROM plain;
VACUUM FREEZE ANALYZE plain, t;
SQL

# measure: prints "encrypt decrypt drain destroy" in ms for the build in use.
measure() {
	psql_compare <<'SQL'
SELECT count(*) FROM plain;
SELECT count(*) FROM t;
-- warm-up: opens the keys, and a first pass over the rows of each function
SELECT count(pgcrypt_at_rest.encrypt(v, 'bench')) FROM plain;
SELECT count(pgcrypt_at_rest.decrypt(e)) FROM t;
CREATE TEMP TABLE ms (what text, ms float8);
-- the best of three passes, for the functions that change nothing
DO $$
DECLARE
	t0 timestamptz;
	best_encrypt float8 := 'infinity';
	best_decrypt float8 := 'infinity';
BEGIN
	FOR i IN 1..3 LOOP
		t0 := clock_timestamp();
		PERFORM count(pgcrypt_at_rest.encrypt(v, 'bench')) FROM plain;
		best_encrypt := least(best_encrypt, 1000 * extract(epoch FROM clock_timestamp() - t0));
		t0 := clock_timestamp();
		PERFORM count(pgcrypt_at_rest.decrypt(e)) FROM t;
		best_decrypt := least(best_decrypt, 1000 * extract(epoch FROM clock_timestamp() - t0));
	END LOOP;
	INSERT INTO ms VALUES ('encrypt', best_encrypt), ('decrypt', best_decrypt);
END
$$;
SELECT pgcrypt_at_rest.rotate_keyring('bench') > 0;
CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS at;
SELECT pgcrypt_at_rest.drain() > 0;
INSERT INTO ms SELECT 'drain', 1000 * extract(epoch FROM clock_timestamp() - at) FROM t0;
UPDATE t0 SET at = clock_timestamp();
SELECT cardinality(pgcrypt_at_rest.destroy_drained_keys()) = 1;
INSERT INTO ms SELECT 'destroy', 1000 * extract(epoch FROM clock_timestamp() - at) FROM t0;
VACUUM t;
SELECT string_agg(round(ms::numeric, 1)::text, ' ' ORDER BY array_position(ARRAY['encrypt','decrypt','drain','destroy'], what)) FROM ms;
SQL
}

results=$builds/results
: >"$results"
log "$BENCH_RUNS rounds of before and after, $BENCH_ROWS rows"
for run in $(seq 1 "$BENCH_RUNS"); do
	# the order alternates, so that neither build always goes first
	order="before after"
	[ $((run % 2)) -eq 0 ] && order="after before"
	for build in $order; do
		use_build "$build"
		line=$(measure | tail -n 1)
		echo "round $run, $build: $line (ms: encrypt decrypt drain destroy)"
		echo "$build $line" >>"$results"
	done
done

log "results"
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(psql_compare -c 'SELECT version()' | cut -d, -f1);" \
	"$BENCH_ROWS rows of 100 bytes; median of $BENCH_RUNS interleaved rounds"
awk '
function median(a, n,    i, j, t) {
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ n[$1]++; for (k = 2; k <= 5; k++) v[$1, k, n[$1]] = $k }
END {
	split("encrypt decrypt drain destroy", names, " ")
	printf "| %-8s | %12s | %12s | %12s |\n", "what", "before (ms)", "after (ms)", "after/before"
	printf "| %-8s | %12s | %12s | %12s |\n", "---", "---:", "---:", "---:"
	for (k = 2; k <= 5; k++) {
		for (i = 1; i <= n["before"]; i++) b[i] = v["before", k, i]
		for (i = 1; i <= n["after"]; i++) a[i] = v["after", k, i]
		mb = median(b, n["before"]); ma = median(a, n["after"])
		printf "| %-8s | %12.1f | %12.1f | %11.3fx |\n", names[k - 1], mb, ma, ma / mb
	}
}' "$results"
