#!/usr/bin/env bash
# Sets up everything on a fresh Debian 12 machine (as root) and shows
# pgcrypt_at_rest working on a throwaway cluster, removed afterwards.
#
# Environment:
#   DEMO_PORT=54399   the cluster's port (default 54329); the demo stops at
#                     once if something already listens on it
#   DEMO_KEEP=1       keep the cluster running afterwards, and print how to
#                     connect to it and how to stop and remove it
set -euo pipefail
. "$(dirname "$0")/common.sh"

DEMO_PORT=${DEMO_PORT:-54329}
case ${DEMO_KEEP:-} in
'' | 0) KEEP_CLUSTER= ;;
*) KEEP_CLUSTER=1 ;;
esac

if ! [[ $DEMO_PORT =~ ^[0-9]+$ ]] || [ "$DEMO_PORT" -lt 1 ] || [ "$DEMO_PORT" -gt 65535 ]; then
	echo "DEMO_PORT must be a port number from 1 to 65535, not '$DEMO_PORT'" >&2
	exit 2
fi
DEMO_PORT=$((10#$DEMO_PORT))
if busy=$(port_in_use "$DEMO_PORT"); then
	free=54399
	for ((p = DEMO_PORT + 1; p <= 65535 && p <= DEMO_PORT + 100; p++)); do
		if ! port_in_use "$p" >/dev/null; then
			free=$p
			break
		fi
	done
	echo "port $DEMO_PORT is taken: $busy." >&2
	echo "Choose a free port with DEMO_PORT, for example: DEMO_PORT=$free bash scripts/demo.sh" >&2
	exit 2
fi

need_root
install_dependencies
build_and_install

log "starting a throwaway cluster on port $DEMO_PORT, with a fresh server secret outside its data directory"
# quick rotation for the demonstration; the defaults are 60s, 100ms and 7d
start_throwaway_cluster demo "$DEMO_PORT" "pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.rotation_delay = 0
pgcrypt_at_rest.destroy_grace = 0"
work=$CLUSTER_DIR
data=$CLUSTER_DATA

log "running the demonstration"
as_postgres psql -X -h "$work" -p "$DEMO_PORT" -d postgres -v ON_ERROR_STOP=1 \
	-f "$work/scripts/demo.sql"

# The worker destroys the old key only once every transaction older than
# its last pass has ended, so wait from outside any transaction.
log "waiting for the worker to drain and destroy the old key"
for _ in $(seq 1 60); do
	destroyed=$(as_postgres psql -X -At -h "$work" -p "$DEMO_PORT" -d postgres \
		-c "SELECT count(*) FROM pgcrypt_at_rest.keys WHERE status = 'destroyed'")
	[ "$destroyed" -gt 0 ] && break
	sleep 0.5
done
as_postgres psql -X -h "$work" -p "$DEMO_PORT" -d postgres -v ON_ERROR_STOP=1 \
	-f "$work/scripts/demo_after_rotation.sql"

log "does the table file on disk contain the plaintext?"
relpath=$(as_postgres psql -X -At -h "$work" -p "$DEMO_PORT" -d postgres \
	-c "CHECKPOINT" -c "SELECT pg_relation_filepath('patients')" | tail -1)
if grep -q "Ada Lovelace" "$data/$relpath"; then
	echo "plaintext found in $relpath: this is a bug" >&2
	exit 1
fi
echo "no: $relpath holds only ciphertext (searched for 'Ada Lovelace')"
if [ "$KEEP_CLUSTER" = 1 ]; then
	log "demo finished; the cluster is kept (DEMO_KEEP=1), with the demo's quick rotation settings (worker_naptime 1s, rotation_delay 0, destroy_grace 0)"
else
	log "demo finished; the cluster is being removed (DEMO_KEEP=1 keeps it)"
fi
