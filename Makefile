# pgcrypt_at_rest: PGXS build
#
#   make && make install          build and install into the PostgreSQL of PG_CONFIG
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
	src/sql_functions.o

EXTENSION = pgcrypt_at_rest
DATA = sql/pgcrypt_at_rest--1.0.sql sql/pgcrypt_at_rest--1.0--1.1.sql \
	sql/pgcrypt_at_rest--1.1--1.2.sql sql/pgcrypt_at_rest--1.2--1.3.sql
PGFILEDESC = "pgcrypt_at_rest - encrypted columns with sealed, rotating data keys"

REGRESS = type_io keyring encrypt_decrypt errors rotation nested_values pinned_keys upgrade
ISOLATION = concurrent_rotation context_owner_change destruction_count_moves destroy_key_waits rotation_key_share rotation_update rotation_delete rotation_insert_select rotation_long_transaction rotation_copy_chain
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
EXTRA_CLEAN = test_config tmp_check_regress tmp_check_iso

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
