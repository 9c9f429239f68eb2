#!/usr/bin/env bash
# Benchmarks key rotation by the background worker, on one throwaway cluster:
#
# 1. throughput: rows per second re-encrypted by the worker with throttling
#    off (rotation_delay 0; batch size 500, the default, and a larger one),
#    against one bare
#        UPDATE t SET v = encrypt(decrypt(v), 'ring')
#    over the same 1,000,000 rows of 100-byte values.  Before each
#    measurement the table is rewritten compact (VACUUM FULL, FREEZE),
#    checkpointed and loaded into shared_buffers, so all start alike.  The
#    bare UPDATE re-encrypts under the active key (the same work per row as
#    a rotation); the worker's time runs from the commit of rotate_keyring()
#    (which wakes it) to the last value re-encrypted, as its progress table
#    shows it, polled every 0.1 s (no scan of the table while it works), and
#    then checked with a full scan.  destroy_grace is 1 day, so no key is
#    destroyed; the time until the old key is marked drained is shown too.
# 2. interference: the TPS of pgbench's built-in TPC-B-like workload
#    (-c 2 -j 2, scale 10, in schema pgb of the same database) without a
#    drain and during one at default throttling (rotation_delay 100ms, batch
#    size 500).  A run during the drain counts only if the worker was busy
#    before it began and still had values left when it ended.  Runs before
#    and during alternate; "before" runs after the first pause the worker
#    (worker_enabled = off); the best run of each kind is kept.  Each run
#    also shows the CPU the worker used, and the CPU used outside this
#    benchmark (from /proc): on a shared machine that is the noise.
#
# Then it prints the tables and checks the targets: the worker at batch 500
# reaches at least half the bare UPDATE's rows/s, and pgbench keeps at least
# 90% of its TPS during the drain.
#
# As root on Debian 12: installs what is missing, builds and installs the
# extension, starts a private cluster, and removes it at the end.  About 3
# minutes at BENCH_SCALE=1.
#
# Environment:
#   BENCH_SCALE=0.1   multiply the row count, and pgbench's scale (default 1);
#                     the default-throttled drain re-encrypts about 5,000
#                     rows/s: below about 0.3 it ends before the pgbench runs
#                     do, and the runs it does not cover are not counted
#   BENCH_RUNS=3      pgbench runs before and during the drain (default 3)
#   BENCH_SECONDS=20  length of each pgbench run (default 20)
#   BENCH_BATCH=5000  the larger rotation_batch_size measured; 0 skips it
#   BENCH_PORT=54331  the cluster's private port
#   BENCH_DURABLE=1   keep fsync, synchronous_commit and full_page_writes on
#                     (default off: a CPU-bound pgbench, the harsher case for
#                     interference, and steadier on a shared machine)
#   BENCH_PERF=FILE   perf record -g the worker during the batch-500 drain
#   BENCH_BUILD=0     use the installed extension as it is (no build)
#   BENCH_CHECK=1     exit 1 if a target is not met (default: report only)
#   BENCH_KEEP=1      keep the cluster running and its directory afterwards
set -euo pipefail
. "$(dirname "$0")/../scripts/common.sh"

BENCH_SCALE=${BENCH_SCALE:-1}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SECONDS=${BENCH_SECONDS:-20}
BENCH_BATCH=${BENCH_BATCH:-5000}
BENCH_PORT=${BENCH_PORT:-54331}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-3600}
PGBENCH_CLIENTS=2

read -r rows pgbench_scale shared_buffers_mb < <(awk -v s="$BENCH_SCALE" 'BEGIN {
	if (s + 0 <= 0) { print "0 0 0"; exit }
	r = int(1000000 * s + 0.5); p = int(10 * s + 0.5); if (p < 1) p = 1;
	# about 0.28 kB a row and 22 B of index per version; a rotation doubles
	# both until the next VACUUM FULL; pgbench needs about 16 MB per scale
	# unit, plus what its runs add: everything fits in shared_buffers
	mb = int(r * 0.6 / 1024 * 1.1) + p * 24 + 128;
	print r, p, mb }')
if [ "$rows" -lt 1 ] || ! [ "$BENCH_RUNS" -ge 1 ] 2>/dev/null ||
	! [ "$BENCH_SECONDS" -ge 1 ] 2>/dev/null || ! [ "$BENCH_BATCH" -ge 0 ] 2>/dev/null; then
	echo "BENCH_SCALE must be > 0, BENCH_RUNS and BENCH_SECONDS >= 1, BENCH_BATCH >= 0" >&2
	exit 2
fi

need_root
# shellcheck disable=SC2119 # no extra packages
install_dependencies
[ "${BENCH_BUILD:-}" = 0 ] || build_and_install
if [ -n "${BENCH_PERF:-}" ] && ! command -v perf >/dev/null; then
	echo "BENCH_PERF needs perf (Debian package linux-perf)" >&2
	exit 2
fi

KEEP_CLUSTER=${BENCH_KEEP:-}
settings="pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = '1d'
shared_buffers = ${shared_buffers_mb}MB
max_parallel_workers_per_gather = 0
jit = off
autovacuum = off
max_wal_size = 8GB
checkpoint_timeout = 1h
maintenance_work_mem = 256MB"
if [ "${BENCH_DURABLE:-}" != 1 ]; then
	settings+="
fsync = off
synchronous_commit = off
full_page_writes = off"
fi
log "starting a throwaway cluster on port $BENCH_PORT (shared_buffers ${shared_buffers_mb}MB)"
# No parallel workers or JIT, no autovacuum or checkpoints during the runs
# (the script vacuums and checkpoints between them), everything in
# shared_buffers.  The worker looks for work every second, and keeps drained
# keys for a day: destruction is not part of what is measured.
start_throwaway_cluster bench "$BENCH_PORT" "$settings"
work=$CLUSTER_DIR
data=$CLUSTER_DATA

psql_bench() {
	as_postgres psql -X -q -h "$work" -p "$BENCH_PORT" -d postgres -v ON_ERROR_STOP=1 "$@"
}

# Progress NOTICEs of a command, on stderr.
psql_progress() {
	psql_bench "$@" 2>&1 >/dev/null | sed -u 's/^NOTICE:  /  /' >&2
}

# wait_for WHAT SECONDS QUERY: polls QUERY (true when done) every 0.1 s.
wait_for() {
	local deadline=$((SECONDS + $2))
	until [ "$(psql_bench -At -c "SELECT ($3)")" = t ]; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "timed out after $2 s waiting for $1" >&2
			exit 1
		fi
		sleep 0.1
	done
}

worker_is() {
	echo "EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'pgcrypt_at_rest worker'
					AND datname = current_database() $1)"
}

# set_worker NAME=VALUE...: ALTER SYSTEM each (VALUE 'default' resets it),
# reload, and give the worker a moment to read the file.
set_worker() {
	local args=() setting
	for setting in "$@"; do
		if [ "${setting#*=}" = default ]; then
			args+=(-c "ALTER SYSTEM RESET pgcrypt_at_rest.${setting%%=*}")
		else
			args+=(-c "ALTER SYSTEM SET pgcrypt_at_rest.${setting%%=*} = '${setting#*=}'")
		fi
	done
	psql_bench "${args[@]}" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 1
}

# The same starting point for every measurement: bench.t compact, frozen,
# analyzed, checkpointed, and in shared_buffers.
reset_table() {
	psql_bench -c "VACUUM (FULL, FREEZE) bench.t" -c "ANALYZE bench.t" -c "CHECKPOINT" \
		-c "SELECT pg_prewarm('bench.t'), pg_prewarm('bench.t_pkey')" >/dev/null
}

# start_rotation KIND LABEL: rotates 'ring', prints the run's number.
start_rotation() {
	psql_bench -At -c "SELECT bench.start_rotation('$1', '$2')"
}

log "loading $rows rows of 100-byte values"
start=$SECONDS
psql_bench -v rows="$rows" -f "$work/bench/rotation_setup.sql" >/dev/null
echo "loaded in $((SECONDS - start)) s"
wait_for "the rotation worker to start" 60 "$(worker_is "")"

log "1. bare UPDATE of every row"
reset_table
start=$SECONDS
psql_bench -c "CALL bench.time_bare_update()"
echo "updated in $((SECONDS - start)) s"

batches=(500)
[ "$BENCH_BATCH" -gt 0 ] && [ "$BENCH_BATCH" -ne 500 ] && batches+=("$BENCH_BATCH")
for batch in "${batches[@]}"; do
	log "1. worker drain, batch $batch, no delay"
	reset_table
	set_worker rotation_delay=0 rotation_batch_size="$batch"
	perf_pid=
	if [ -n "${BENCH_PERF:-}" ] && [ "$batch" = 500 ]; then
		worker_pid=$(psql_bench -At -c "SELECT pid FROM pg_stat_activity
			WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = current_database()")
		perf record -e cpu-clock -g -p "$worker_pid" -o "$BENCH_PERF" >/dev/null 2>&1 &
		perf_pid=$!
		sleep 1
	fi
	start=$SECONDS
	run=$(start_rotation unthrottled "rotation worker")
	psql_progress -c "CALL bench.wait_drain($run, $BENCH_TIMEOUT)"
	echo "drained in $((SECONDS - start)) s"
	if [ -n "$perf_pid" ]; then
		kill -INT "$perf_pid"
		wait "$perf_pid" || true
		echo "perf profile of the worker (pid $worker_pid): $BENCH_PERF"
	fi
done

log "2. pgbench -c $PGBENCH_CLIENTS -j $PGBENCH_CLIENTS -T $BENCH_SECONDS, scale $pgbench_scale, before and during a default-throttled drain"
set_worker rotation_delay=default rotation_batch_size=default
reset_table
psql_bench -c "CREATE SCHEMA pgb"
pgbench_cmd() {
	as_postgres env PGOPTIONS="-c search_path=pgb" \
		pgbench -h "$work" -p "$BENCH_PORT" "$@" postgres
}
pgbench_cmd -i -q -s "$pgbench_scale" >"$work/pgbench.log" 2>&1 ||
	{ cat "$work/pgbench.log" >&2; exit 1; }
psql_bench -c "SELECT pg_prewarm(c.oid) FROM pg_class c
				WHERE c.relnamespace = 'pgb'::regnamespace AND c.relkind IN ('r', 'i')" \
	-c "CHECKPOINT" >/dev/null
# Cumulative CPU ticks (USER_HZ): busy and total of the whole machine, this
# cluster's processes (the postmaster with the children it reaped, and the
# live ones), and the worker's.
postmaster_pid=$(head -n 1 "$data/postmaster.pid")
clk_tck=$(getconf CLK_TCK)
cpu_sample() {
	awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; printf "%d %d ", t - $5 - $6, t }' /proc/stat
	# /proc/PID/stat without "PID (comm) ": $2 is the ppid, $12 utime, $13
	# stime, $14 cutime, $15 cstime
	for f in /proc/[0-9]*/stat; do
		read -r line <"$f" 2>/dev/null && echo "$line"
	done 2>/dev/null | awk -v pm="$postmaster_pid" -v w="$worker_pid" '{
		pid = $1; sub(/^[0-9]+ \(.*\) /, "")
		if (pid == pm) c += $12 + $13 + $14 + $15
		else if ($2 == pm) c += $12 + $13
		if (pid == w) wt = $12 + $13
	} END { printf "%d %d\n", c, wt }'
}

# run_pgbench PHASE RUN: one run of pgbench; notes its TPS and
# where the CPU went: the worker, and processes outside this benchmark (the
# machine's busy time less this cluster's and pgbench's own).  -v: pgbench
# vacuums all four tables first (autovacuum is off), so that every run
# starts from the same state, not from the bloat of the runs before it.
run_pgbench() {
	local out tps before after pgbench_cpu
	before=$(cpu_sample)
	out=$(pgbench_cmd -v -c "$PGBENCH_CLIENTS" -j "$PGBENCH_CLIENTS" -T "$BENCH_SECONDS" 2>&1 &&
		times) || { echo "$out" >&2; exit 1; }
	after=$(cpu_sample)
	echo "$out" >>"$work/pgbench.log"
	tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
	[ -n "$tps" ] || { echo "$out" >&2; echo "no TPS in pgbench's output" >&2; exit 1; }
	# children's user and system time, as "1m2.345s 0m6.789s"
	pgbench_cpu=$(tail -n 1 <<<"$out" | awk '{ s = 0; for (i = 1; i <= 2; i++) {
		split($i, p, "m"); s += p[1] * 60 + p[2] } print s }')
	read -r worker_cores others_cores < <(echo "$before $after" | awk -v hz="$clk_tck" \
		-v n="$(nproc)" -v pgbench_cpu="$pgbench_cpu" '{
		seconds = ($6 - $2) / n / hz
		printf "%.4f %.4f\n", ($8 - $4) / hz / seconds,
			(($5 - $1) - ($7 - $3)) / hz / seconds - pgbench_cpu / seconds }')
	psql_bench -c "INSERT INTO bench.pgbench_run (run, phase, seconds, tps, worker_cores, others_cores)
				   VALUES ($2, '$1', $BENCH_SECONDS, $tps, $worker_cores, $others_cores)"
	echo "$tps"
}
worker_pid=$(psql_bench -At -c "SELECT pid FROM pg_stat_activity
	WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = current_database()")
pgbench_cmd -v -c "$PGBENCH_CLIENTS" -j "$PGBENCH_CLIENTS" -T 5 >/dev/null 2>&1	# warm-up

throttled=
for run in $(seq 1 "$BENCH_RUNS"); do
	if [ -n "$throttled" ]; then
		set_worker worker_enabled=off
		wait_for "the worker to pause" 30 "$(worker_is "AND query LIKE 'paused%'")"
	fi
	tps=$(run_pgbench before "$run")
	echo "run $run, no drain: $tps TPS"

	if [ -z "$throttled" ]; then
		throttled=$(start_rotation throttled "rotation worker, default throttling")
		old_key=$(psql_bench -At -c "SELECT old_key FROM bench.reencryption WHERE ord = $throttled")
		total=$(psql_bench -At -c "SELECT rows FROM bench.reencryption WHERE ord = $throttled")
		wait_for "the drain to begin" 60 "bench.reencrypted($old_key) > 0"
	else
		set_worker worker_enabled=default
		wait_for "the drain to resume" 60 "bench.reencrypted($old_key) > $done_before"
	fi
	done_before=$(psql_bench -At -c "SELECT bench.reencrypted($old_key)")
	tps=$(run_pgbench during "$run")
	done_after=$(psql_bench -At -c "SELECT bench.reencrypted($old_key)")
	echo "run $run, during the drain: $tps TPS; $((done_after - done_before)) rows re-encrypted," \
		"$((total - done_after)) left"
	psql_bench -c "UPDATE bench.pgbench_run SET reencrypted_at_start = $done_before,
					   reencrypted_at_end = $done_after, remaining_at_end = $total - $done_after
				    WHERE run = $run AND phase = 'during'"
	if [ "$done_after" -ge "$total" ]; then
		echo "the drain ended within the run: not counted; raise BENCH_SCALE" >&2
		break
	fi
done

log "results"
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(psql_bench -At -c 'SELECT version()' | cut -d, -f1);" \
	"libsodium $(dpkg-query -W -f '${Version}' libsodium23 2>/dev/null || echo '?');" \
	"extension from $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')$(
		[ -n "$(git -C "$REPO_DIR" status --porcelain -- src sql 2>/dev/null)" ] && echo ' with uncommitted changes');" \
	"BENCH_SCALE=$BENCH_SCALE$([ "${BENCH_DURABLE:-}" = 1 ] && echo ', durable' || echo ', fsync off')"
report=$(psql_bench -f "$work/bench/rotation_report.sql")
echo "$report"

# The worker logs a failed step and goes on: say so, the numbers may not
# be what they seem.
failures=$(grep -c 'pgcrypt_at_rest worker: .* failed' "$work/server.log" || true)
if [ "$failures" -gt 0 ]; then
	echo
	echo "the worker logged $failures failed steps; the first kinds (server log):"
	grep -o 'pgcrypt_at_rest worker: .* failed: .*' "$work/server.log" |
		sed 's/[0-9][0-9]*/N/g' | sort | uniq -c | sort -rn | head -5
fi

if grep -q 'NOT MET\|NOT MEASURED' <<<"$report"; then
	echo
	echo "some targets are not met"
	[ "${BENCH_CHECK:-}" = 1 ] && exit 1
fi
exit 0
