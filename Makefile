# pgcrypt_at_rest: PGXS build
#
#   make && make install          build and install into the PostgreSQL of PG_CONFIG
#                                 (the library, and pgcrypt_at_rest_keygen and
#                                 pgcrypt_at_rest_pubkey into its bindir)
#   make installcheck             every test, as any user, against temporary
#                                 instances (after the one root step: make install)
#   make TEST_BUILD=1             a build for tests: assertions on, warnings are errors
#   scripts/test.sh               all of it on a fresh machine, as root (see README)

MODULE_big = pgcrypt_at_rest
OBJS = \
	src/pgcrypt_at_rest.o \
	src/guc.o \
	src/sodium_provider.o \
	src/nonce.o \
	src/ciphertext.o \
	src/encrypted_type.o \
	src/secret_file.o \
	src/server_key.o \
	src/key_store.o \
	src/key_cache.o \
	src/restricted.o \
	src/spi_session.o \
	src/rotation_store.o \
	src/shared_state.o \
	src/launcher.o \
	src/worker.o \
	src/drain.o \
	src/key_destruction.o \
	src/policy.o \
	src/encrypted_values.o \
	src/encrypted_columns.o \
	src/value_census.o \
	src/row_rewrite.o \
	src/context_expression.o \
	src/servers.o \
	src/sql_functions.o

EXTENSION = pgcrypt_at_rest
DATA = sql/pgcrypt_at_rest--1.0.sql sql/pgcrypt_at_rest--1.0--1.1.sql \
	sql/pgcrypt_at_rest--1.1--1.2.sql sql/pgcrypt_at_rest--1.2--1.3.sql \
	sql/pgcrypt_at_rest--1.3--1.4.sql
PGFILEDESC = "pgcrypt_at_rest - encrypted columns with sealed, rotating data keys"

REGRESS = type_io keyring encrypt_decrypt errors rotation nested_values pinned_keys servers upgrade
ISOLATION = concurrent_rotation context_owner_change destruction_count_moves destroy_key_waits server_set_races seal_during_destruction rotation_key_share rotation_update rotation_delete rotation_insert_select rotation_long_transaction rotation_copy_chain
TAP_TESTS = 1

# The regression and isolation suites need the library preloaded and a server
# secret: each runs in a temporary instance with the configuration written by
# test-config, whose secret (0600) lives outside the directories the
# temporary instances wipe.  The worker is paused there: they drive rotation
# with drain() and destroy_drained_keys().  The TAP tests make their own
# clusters.
TEST_CONFIG_DIR = $(CURDIR)/test_config
REGRESS_PREP = test-config
REGRESS_OPTS = --temp-instance=$(CURDIR)/tmp_check_regress --temp-config=$(TEST_CONFIG_DIR)/regress.conf
ISOLATION_OPTS = --temp-instance=$(CURDIR)/tmp_check_iso --temp-config=$(TEST_CONFIG_DIR)/regress.conf

# Two command-line programs, so that a DBA can prepare a server without
# starting it: pgcrypt_at_rest_keygen writes a new server secret and prints
# its public key, pgcrypt_at_rest_pubkey prints the public key of an
# existing one.  PGXS builds one PROGRAM, from the module's objects, so they
# have rules of their own below.  Plain C and libsodium: they link no
# PostgreSQL library, and share secret_file.o (the secret file's format and
# checks, the public key) with the extension.
CLI_PROGRAMS = pgcrypt_at_rest_keygen pgcrypt_at_rest_pubkey
CLI_OBJS = src/cli/pgcrypt_at_rest_keygen.o src/cli/pgcrypt_at_rest_pubkey.o \
	src/cli/cli_common.o
CLI_COMMON_OBJS = src/cli/cli_common.o src/secret_file.o

EXTRA_CLEAN = test_config tmp_check_regress tmp_check_iso $(CLI_PROGRAMS) $(CLI_OBJS)

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
ifdef TEST_BUILD
PG_CPPFLAGS += -DUSE_ASSERT_CHECKING
PG_CFLAGS += -Werror
endif
SHLIB_LINK = -lsodium

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: test-config
test-config:
	@mkdir -p $(TEST_CONFIG_DIR)
	@chmod 700 $(TEST_CONFIG_DIR)
	@test -s $(TEST_CONFIG_DIR)/server.key || \
		(umask 077 && od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' > $(TEST_CONFIG_DIR)/server.key)
	@printf '%s\n' \
		"shared_preload_libraries = 'pgcrypt_at_rest'" \
		"pgcrypt_at_rest.server_key_file = '$(TEST_CONFIG_DIR)/server.key'" \
		"pgcrypt_at_rest.worker_enabled = off" \
		"pgcrypt_at_rest.destroy_grace = 0" > $(TEST_CONFIG_DIR)/regress.conf

# --version prints the extension's default version.
PCAR_VERSION := $(shell sed -n "s/^default_version = '\(.*\)'$$/\1/p" $(srcdir)/pgcrypt_at_rest.control)

all: $(CLI_PROGRAMS)

src/cli/cli_common.o: override CPPFLAGS += -DPCAR_VERSION='"$(PCAR_VERSION)"'
src/cli/cli_common.o: $(srcdir)/pgcrypt_at_rest.control
$(CLI_OBJS): $(srcdir)/src/cli/cli_common.h
$(CLI_OBJS) src/secret_file.o src/server_key.o src/sodium_provider.o: $(srcdir)/src/secret_file.h

$(CLI_PROGRAMS): %: src/cli/%.o $(CLI_COMMON_OBJS)
	$(CC) $(CFLAGS) $^ $(LDFLAGS) $(LDFLAGS_EX) -lsodium -o $@

# Into PostgreSQL's bindir, beside pg_ctl (on Debian
# /usr/lib/postgresql/15/bin, which is not on PATH).
.PHONY: install-cli uninstall-cli
install: install-cli
install-cli: $(CLI_PROGRAMS)
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) $(CLI_PROGRAMS) '$(DESTDIR)$(bindir)/'

uninstall: uninstall-cli
uninstall-cli:
	rm -f $(addprefix '$(DESTDIR)$(bindir)'/, $(CLI_PROGRAMS))
