# pgcrypt_at_rest: PGXS build
#
#   make && make install          build and install into the PostgreSQL of PG_CONFIG
#   scripts/test.sh               every test against throwaway clusters (see README)

MODULE_big = pgcrypt_at_rest
OBJS = \
	src/pgcrypt_at_rest.o \
	src/guc.o \
	src/sodium_provider.o \
	src/nonce.o \
	src/ciphertext.o \
	src/encrypted_type.o \
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
	sql/pgcrypt_at_rest--1.1--1.2.sql
PGFILEDESC = "pgcrypt_at_rest - encrypted columns with sealed, rotating data keys"

# Regression tests need the library preloaded and a server secret: scripts/test.sh
# writes the secret and passes --temp-instance/--temp-config through EXTRA_REGRESS_OPTS.
REGRESS = type_io keyring encrypt_decrypt errors rotation nested_values upgrade
ISOLATION = concurrent_rotation context_owner_change destruction_count_moves rotation_key_share rotation_update rotation_delete rotation_insert_select rotation_long_transaction rotation_copy_chain
TAP_TESTS = 1

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
SHLIB_LINK = -lsodium

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
