#!/usr/bin/env bash
# Benchmarks pgcrypt_at_rest's encrypt() and decrypt() against md5() and
# pgcrypto's raw AES encrypt()/decrypt(), per row, on one throwaway cluster.
#
# As root on Debian 12: installs what is missing, builds and installs the
# extension, starts a private cluster, loads 1,000,000 rows of 100-byte values
# and 200,000 rows of 4 kB values, times each per-row function, prints a
# table of ns per row (total and above a plain scan of the same column) with
# ratios, checks the targets, and removes the cluster.
#
# Environment:
#   BENCH_SCALE=0.1   multiply both row counts (default 1)
#   BENCH_RUNS=5      timed runs per measurement, best one kept (default 5)
#   BENCH_PORT=54330  the cluster's private port
#   BENCH_CHECK=1     exit 1 if a target is not met (default: report only)
#   BENCH_KEEP=1      keep the cluster running and its directory afterwards
set -euo pipefail
. "$(dirname "$0")/../scripts/common.sh"

BENCH_SCALE=${BENCH_SCALE:-1}
BENCH_RUNS=${BENCH_RUNS:-5}
BENCH_PORT=${BENCH_PORT:-54330}

read -r rows100 rows4k shared_buffers_mb < <(awk -v s="$BENCH_SCALE" 'BEGIN {
	if (s + 0 <= 0) { print "0 0 0"; exit }
	r100 = int(1000000 * s + 0.5); r4k = int(200000 * s + 0.5);
	# about 0.4 kB a 100-byte row and 16 kB a 4 kB row (three TOASTed values
	# and their TOAST index entries): everything fits in shared_buffers, so
	# every run reads cached pages
	mb = int((r100 * 0.45 + r4k * 16) / 1024 * 1.2) + 128;
	print r100, r4k, mb }')
if [ "$rows100" -lt 1 ] || ! [ "$BENCH_RUNS" -ge 1 ] 2>/dev/null; then
	echo "BENCH_SCALE must be > 0 and BENCH_RUNS >= 1" >&2
	exit 2
fi

need_root
# shellcheck disable=SC2119 # no extra packages
install_dependencies
build_and_install

KEEP_CLUSTER=${BENCH_KEEP:-}
log "starting a throwaway cluster on port $BENCH_PORT (shared_buffers ${shared_buffers_mb}MB)"
# Settings for a stable single-backend measurement: no parallel workers and
# no JIT (per-row costs are those of the functions), no autovacuum or
# checkpoints during the runs, and everything in shared_buffers.  fsync is
# off: the cluster is thrown away and the tables are unlogged anyway.
start_throwaway_cluster bench "$BENCH_PORT" "shared_buffers = ${shared_buffers_mb}MB
max_parallel_workers_per_gather = 0
jit = off
autovacuum = off
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
checkpoint_timeout = 1h
maintenance_work_mem = 256MB"
work=$CLUSTER_DIR

psql_bench() {
	as_postgres psql -X -q -h "$work" -p "$BENCH_PORT" -d postgres -v ON_ERROR_STOP=1 "$@"
}

log "loading $rows100 rows of 100-byte values and $rows4k rows of 4 kB values"
start=$SECONDS
psql_bench -v rows100="$rows100" -v rows4k="$rows4k" -f "$work/bench/setup.sql" >/dev/null
echo "loaded in $((SECONDS - start)) s"

log "timing: 1 warm-up round, then $BENCH_RUNS timed rounds (progress on stderr)"
start=$SECONDS
psql_bench -c "CALL bench.run($BENCH_RUNS)" 2>&1 >/dev/null |
	sed -u 's/^NOTICE:  /  /' >&2
echo "timed in $((SECONDS - start)) s"

log "results"
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(psql_bench -At -c 'SELECT version()' | cut -d, -f1);" \
	"libsodium $(dpkg-query -W -f '${Version}' libsodium23 2>/dev/null || echo '?');" \
	"best of $BENCH_RUNS runs, BENCH_SCALE=$BENCH_SCALE"
report=$(psql_bench -f "$work/bench/report.sql")
echo "$report"

if grep -q 'NOT MET' <<<"$report"; then
	echo
	echo "some targets are not met"
	[ "${BENCH_CHECK:-}" = 1 ] && exit 1
fi
exit 0
