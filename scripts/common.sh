# Shared by demo.sh, test.sh and bench/run.sh: install what is missing, build,
# install, and run commands as the postgres OS user (PostgreSQL refuses root).

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BIN/pg_config
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '\n== %s\n' "$*"; }

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "run this as root: it installs packages and the extension" >&2
		exit 1
	fi
}

install_dependencies() {
	local packages="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libsodium-dev \
		libipc-run-perl make gcc $*"
	# shellcheck disable=SC2086
	if dpkg -s $packages >/dev/null 2>&1; then
		return
	fi
	log "installing Debian packages: $packages"
	apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
}

# build_and_install [MAKE VARIABLES]: e.g. TEST_BUILD=1 for assertions and -Werror.
build_and_install() {
	log "building and installing pgcrypt_at_rest${*:+ ($*)}"
	make -C "$REPO_DIR" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
	make -C "$REPO_DIR" -s PG_CONFIG="$PG_CONFIG" "$@"
	make -C "$REPO_DIR" -s PG_CONFIG="$PG_CONFIG" "$@" install >/dev/null
}

# A copy of the source tree that the postgres user can write (tests create
# clusters and result files next to the sources).
postgres_owned_copy() {
	local dest
	dest=$(mktemp -d "/tmp/pgcrypt_at_rest-$1.XXXXXX")
	tar -C "$REPO_DIR" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
		--exclude=./test_config --exclude='./tmp_check*' --exclude=./results --exclude=./output_iso \
		-cf - . | tar -C "$dest" -xf -
	chown -R postgres:postgres "$dest"
	chmod 700 "$dest"
	echo "$dest"
}

as_postgres() {
	runuser -u postgres -- env PATH="$PG_BIN:$PATH" "$@"
}

# Writes a fresh 32-byte server secret, as 64 hex characters, readable only by postgres.
write_server_secret() {
	as_postgres bash -c "umask 077 && mkdir -p '$(dirname "$1")' &&
		od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' > '$1'"
}

# start_throwaway_cluster NAME PORT [SETTINGS]: initdb and start a private
# cluster as postgres on PORT, its socket in its own directory, the extension
# preloaded and a fresh secret outside the data directory, plus SETTINGS
# (postgresql.conf lines).  It is removed when the script exits, unless
# KEEP_CLUSTER=1.  Sets CLUSTER_DIR (a copy of the tree, and the socket
# directory) and CLUSTER_DATA.
start_throwaway_cluster() {
	local name=$1 port=$2 settings=${3:-}
	local secret
	CLUSTER_DIR=$(postgres_owned_copy "$name")
	CLUSTER_DATA=$CLUSTER_DIR/cluster/data
	CLUSTER_PORT=$port
	secret=$CLUSTER_DIR/secrets/server.key
	trap stop_throwaway_cluster EXIT

	write_server_secret "$secret"
	as_postgres initdb -D "$CLUSTER_DATA" -A peer --no-instructions >/dev/null
	as_postgres tee -a "$CLUSTER_DATA/postgresql.conf" >/dev/null <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$CLUSTER_DIR'
shared_preload_libraries = 'pgcrypt_at_rest'
pgcrypt_at_rest.server_key_file = '$secret'
$settings
CONF
	as_postgres pg_ctl -D "$CLUSTER_DATA" -l "$CLUSTER_DIR/server.log" -w start >/dev/null
}

# port_in_use PORT: true, saying by what, if something listens on TCP port
# PORT or a PostgreSQL server has a socket for it (.s.PGSQL.PORT).  Reads
# /proc, so it needs neither ss nor netstat.
port_in_use() {
	local port=$1 hex found
	hex=$(printf '%04X' "$port")
	# /proc/net/tcp{,6}: local address ADDR:PORT in hex, state 0A is LISTEN
	if awk -v hex="$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 3) == hex { f = 1 }
		END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
		echo "something listens on TCP port $port"
		return 0
	fi
	found=$(awk -v s="/.s.PGSQL.$port" 'FNR > 1 && NF >= 8 && substr($NF, length($NF) - length(s) + 1) == s { print $NF; exit }' \
		/proc/net/unix 2>/dev/null)
	if [ -n "$found" ]; then
		echo "a PostgreSQL server listens on port $port (socket $found)"
		return 0
	fi
	return 1
}

# shellcheck disable=SC2317 # called by the trap
stop_throwaway_cluster() {
	if [ "${KEEP_CLUSTER:-}" = 1 ]; then
		if as_postgres pg_ctl -D "$CLUSTER_DATA" status >/dev/null 2>&1; then
			cat >&2 <<KEPT

== kept: the cluster is still running on port $CLUSTER_PORT, data in $CLUSTER_DATA
connect:         runuser -u postgres -- $PG_BIN/psql -h $CLUSTER_DIR -p $CLUSTER_PORT -d postgres
stop and remove: runuser -u postgres -- $PG_BIN/pg_ctl -D $CLUSTER_DATA stop && rm -rf $CLUSTER_DIR
KEPT
		else
			printf '\n== kept, not running: %s\nremove: rm -rf %s\n' "$CLUSTER_DIR" "$CLUSTER_DIR" >&2
		fi
		return
	fi
	as_postgres pg_ctl -D "$CLUSTER_DATA" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$CLUSTER_DIR"
}
