#!/usr/bin/env bash
# Runs every test (regression, isolation, TAP) against throwaway clusters.
# As root on a fresh Debian 12 machine it first installs what is missing and
# builds and installs the extension; the tests themselves run as postgres.
# Exits non-zero on any failure.
set -euo pipefail
. "$(dirname "$0")/common.sh"

need_root
install_dependencies
build_and_install TEST_BUILD=1

# Citus for t/013_citus.pl (Debian has no package; the shared tree builds it,
# about two minutes the first time).  Where the installer exists, the test
# must run: a failed install makes it fail rather than skip.
citus_installer=$REPO_DIR/../shared/scripts/install-citus.sh
if [ -f "$citus_installer" ]; then
	export PCAR_REQUIRE_CITUS=1
	log "installing Citus for the tests"
	bash "$citus_installer" || log "installing Citus failed: t/013_citus.pl will fail"
else
	log "note: $citus_installer not found; t/013_citus.pl is skipped unless Citus is installed"
fi

# What is left needs no root: make installcheck, as postgres, in a copy of
# the tree it can write (the suites' temporary instances live there).
work=$(postgres_owned_copy test)
log "running regression, isolation and TAP tests in $work"
status=0
as_postgres make -C "$work" -s PG_CONFIG="$PG_CONFIG" installcheck PROVE_FLAGS="--timer" || status=$?

if [ "$status" -ne 0 ]; then
	for diffs in "$work/regression.diffs" "$work/output_iso/regression.diffs"; do
		[ -s "$diffs" ] && { echo "== $diffs"; cat "$diffs"; }
	done
	for logf in "$work"/tmp_check/log/*; do
		[ -f "$logf" ] && { echo "== $logf"; tail -n 40 "$logf"; }
	done
	echo "FAILED; results kept in $work" >&2
	exit "$status"
fi
rm -rf "$work"
log "all tests passed"
