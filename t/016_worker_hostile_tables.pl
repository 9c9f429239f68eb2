# A tenant who may create tables in one schema cannot stop rotation for the
# rest of the database.  Its tables fail in every way the review found:
#
#  - a table and a column named with U+0001 (which once cut the worker's
#    plan cache key);
#  - a partial index whose predicate raises an error when evaluated;
#  - a context expression that sleeps (pg_sleep) far past the worker's
#    statement timeout;
#  - a table kept under ACCESS EXCLUSIVE in an open transaction;
#  - the advisory lock the drain lock once was, held in another session.
#
# The worker re-encrypts every other table all the same; each failing table
# shows its error in rotation_status and rotation_failure and is retried
# with backoff, its failures logged fewer times than they happened.  drain()
# called meanwhile warns about the locked table and finishes.  Once the
# tenant's tables behave, they drain too and the old key is destroyed.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($node) = preloaded_node(
	'main', conf => q{
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = 0
pgcrypt_at_rest.rotation_delay = 0
pgcrypt_at_rest.worker_statement_timeout = '2s'
pgcrypt_at_rest.worker_lock_timeout = '1s'
});
$node->start;

my $old_key = $node->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
CREATE ROLE tenant LOGIN;
CREATE SCHEMA tenant AUTHORIZATION tenant;
GRANT EXECUTE ON FUNCTION pgcrypt_at_rest.encrypt(text, text),
	pgcrypt_at_rest.encrypt(text, text, bytea) TO tenant;
SELECT pgcrypt_at_rest.create_keyring('ring');
});

# The victims: an admin's table, and one of the tenant's that behaves.
$node->safe_psql(
	'postgres', q{
CREATE TABLE public.victim AS
	SELECT i AS id, pgcrypt_at_rest.encrypt('victim ' || i, 'ring') AS v
	  FROM generate_series(1, 50) i;
});

# The tenant's tables, each written as the tenant.
$node->safe_psql(
	'postgres', qq{
SET ROLE tenant;
CREATE TABLE tenant.ok AS
	SELECT i AS id, pgcrypt_at_rest.encrypt('ok ' || i, 'ring') AS v
	  FROM generate_series(1, 20) i;
CREATE TABLE tenant."odd\x01name" (id int, "v\x01" pgcrypt_at_rest.encrypted);
INSERT INTO tenant."odd\x01name"
	SELECT i, pgcrypt_at_rest.encrypt('odd ' || i, 'ring') FROM generate_series(1, 20) i;

CREATE TABLE tenant.flags (armed text);
CREATE FUNCTION tenant.boom(id int) RETURNS bool LANGUAGE plpgsql IMMUTABLE AS \$\$
BEGIN
	IF EXISTS (SELECT FROM tenant.flags WHERE armed = 'predicate') THEN
		RAISE EXCEPTION 'predicate armed';
	END IF;
	RETURN id > 0;
END \$\$;
CREATE TABLE tenant.predicate (id int, v pgcrypt_at_rest.encrypted);
-- the predicate reads v, so a new v is a new index entry (no HOT update)
CREATE INDEX ON tenant.predicate (id) WHERE tenant.boom(id) AND v IS NOT NULL;
INSERT INTO tenant.predicate
	SELECT i, pgcrypt_at_rest.encrypt('pred ' || i, 'ring') FROM generate_series(1, 20) i;
INSERT INTO tenant.flags VALUES ('predicate'), ('slow');

CREATE FUNCTION tenant.slow_context(id int) RETURNS bytea LANGUAGE plpgsql AS \$\$
BEGIN
	IF EXISTS (SELECT FROM tenant.flags WHERE armed = 'slow') THEN
		PERFORM pg_sleep(30);
	END IF;
	RETURN int4send(id);
END \$\$;
CREATE TABLE tenant.slow (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO tenant.slow
	SELECT i, pgcrypt_at_rest.encrypt('slow ' || i, 'ring', int4send(i)) FROM generate_series(1, 5) i;

-- catches the cancel the statement timeout sends, and goes on
CREATE FUNCTION tenant.stall(id int) RETURNS bool LANGUAGE plpgsql AS \$\$
BEGIN
	WHILE EXISTS (SELECT FROM tenant.flags WHERE armed = 'stubborn') LOOP
		BEGIN
			PERFORM pg_sleep(0.2);
		EXCEPTION WHEN query_canceled THEN
			RAISE LOG 'tenant.stall caught a cancel';
		END;
	END LOOP;
	RETURN true;
END \$\$;
CREATE TABLE tenant.stubborn (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO tenant.stubborn
	SELECT i, pgcrypt_at_rest.encrypt('stubborn ' || i, 'ring') FROM generate_series(1, 5) i;
ALTER TABLE tenant.stubborn ADD CHECK (tenant.stall(id));
INSERT INTO tenant.flags VALUES ('stubborn');

-- takes a session lock in the worker, which must not keep it
CREATE FUNCTION tenant.grab(id int) RETURNS bytea LANGUAGE plpgsql AS \$\$
BEGIN
	PERFORM pg_advisory_lock(4242);
	RETURN int4send(id);
END \$\$;
CREATE TABLE tenant.grabby (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO tenant.grabby
	SELECT i, pgcrypt_at_rest.encrypt('grab ' || i, 'ring', int4send(i)) FROM generate_series(1, 5) i;

CREATE TABLE tenant.locked AS
	SELECT i AS id, pgcrypt_at_rest.encrypt('locked ' || i, 'ring') AS v
	  FROM generate_series(1, 20) i;
});
$node->safe_psql('postgres',
	q{SELECT pgcrypt_at_rest.set_column_context('tenant.slow', 'v', 'tenant.slow_context(id)')});
$node->safe_psql('postgres',
	q{SELECT pgcrypt_at_rest.set_column_context('tenant.grabby', 'v', 'tenant.grab(id)')});

# The tenant holds its table and the old drain lock's key, and keeps them.
my $holder = $node->background_psql('postgres', extra_params => [ '-U', 'tenant' ]);
$holder->query_safe(
	q{BEGIN; LOCK TABLE tenant.locked IN ACCESS EXCLUSIVE MODE; SELECT pg_advisory_lock(1885561202, 1);});

my $new_key =
  $node->safe_psql('postgres', q{SELECT pgcrypt_at_rest.rotate_keyring('ring')});

# Everything that behaves is re-encrypted although the others fail.
my $under_new = sub {
	my ($table, $column) = @_;
	$column //= 'v';
	return qq{SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id($column) = $new_key) FROM $table};
};
ok( wait_for($node, 'postgres', $under_new->('public.victim'), '50', 60, 'the victim drained'),
	'the admin\'s table is re-encrypted while the tenant\'s tables fail and lock');
ok(wait_for($node, 'postgres', $under_new->('tenant.ok'), '20', 60, 'tenant.ok drained'),
	'the tenant\'s own well-behaved table is re-encrypted');
ok( wait_for(
		$node, 'postgres',
		$under_new->(qq{tenant."odd\x01name"}, qq{"v\x01"}),
		'20', 60, 'the U+0001 table drained'),
	'a table and a column named with U+0001 are re-encrypted like any other');

ok(wait_for($node, 'postgres', $under_new->('tenant.grabby'), '5', 60, 'tenant.grabby drained'),
	'a table whose context expression takes a session advisory lock is re-encrypted');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.objid = 4242 AND a.backend_type = 'pgcrypt_at_rest worker'}),
	'0', 'the worker does not keep the session lock the owner\'s code took');

# Each failing table says why, and waits before it is tried again.
ok( wait_for(
		$node, 'postgres', q{
SELECT string_agg(DISTINCT relid::regclass::text, ',' ORDER BY relid::regclass::text)
  FROM pgcrypt_at_rest.rotation_failure WHERE failures >= 1},
		'tenant.predicate,tenant.slow,tenant.stubborn', 60, 'three failing tables'),
	'rotation_failure records the failing predicate, the slow context and the code that ignores cancels');
like(
	$node->safe_psql(
		'postgres',
		q{SELECT last_error FROM pgcrypt_at_rest.rotation_failure WHERE relid = 'tenant.stubborn'::regclass}),
	qr/could not re-encrypt table "stubborn": the worker was stopped during a batch/,
	'code that catches the statement timeout\'s cancel gets the worker stopped, and the next worker records it');
like(slurp_file($node->logfile), qr/tenant.stall caught a cancel/,
	'(the table\'s code did catch the cancel)');
like(
	$node->safe_psql(
		'postgres',
		q{SELECT DISTINCT last_error FROM pgcrypt_at_rest.rotation_status WHERE table_name = 'tenant.slow'::regclass}),
	qr/could not re-encrypt table "slow": canceling statement due to statement timeout/,
	'rotation_status: the sleeping context expression ran into the statement timeout');
like(
	$node->safe_psql(
		'postgres',
		q{SELECT DISTINCT last_error FROM pgcrypt_at_rest.rotation_status WHERE table_name = 'tenant.predicate'::regclass}),
	qr/could not re-encrypt table "predicate": predicate armed/,
	'rotation_status: the failing index predicate is the table\'s error');
like(
	$node->safe_psql(
		'postgres',
		q{SELECT DISTINCT last_error FROM pgcrypt_at_rest.rotation_status WHERE table_name = 'tenant.locked'::regclass}),
	qr/locked by another transaction/,
	'rotation_status: the table held in ACCESS EXCLUSIVE is skipped, not waited for');

# Retries back off, and the log says less than happens.
ok( wait_for(
		$node, 'postgres',
		q{SELECT failures >= 4 FROM pgcrypt_at_rest.rotation_failure WHERE relid = 'tenant.predicate'::regclass},
		't', 90, 'four failures of tenant.predicate'),
	'the failing table is retried');
my $failures = $node->safe_psql('postgres',
	q{SELECT failures FROM pgcrypt_at_rest.rotation_failure WHERE relid = 'tenant.predicate'::regclass});
my $log = slurp_file($node->logfile);
my $logged = () = $log =~ /could not re-encrypt table "predicate": predicate armed/g;
cmp_ok($logged, '>=', 1, 'the failure is in the log');
cmp_ok($logged, '<', $failures,
	"the log has fewer lines about it ($logged) than failures ($failures)");
is( $node->safe_psql(
		'postgres',
		q{SELECT retry_after > last_failed_at + interval '1 second' FROM pgcrypt_at_rest.rotation_failure
		   WHERE relid = 'tenant.predicate'::regclass}),
	't', 'the wait before the next try has grown past one nap');

# The drain lock is not the advisory lock the tenant holds: drain() runs,
# warns about the table it cannot lock and the one that fails, and
# finishes.  (drain() runs the owners' code in the caller's session, with
# no timer of its own: the sleeper and the cancel-catcher are disarmed first.)
$node->safe_psql('postgres', q{DELETE FROM tenant.flags WHERE armed IN ('slow', 'stubborn')});
my ($stdout, $stderr);
$node->psql(
	'postgres', q{SET lock_timeout = '5s'; SELECT pgcrypt_at_rest.drain() >= 0;},
	stdout => \$stdout, stderr => \$stderr);
is($stdout, 't', 'drain() finishes while the tenant holds pg_advisory_lock(1885561202, 1)');
like($stderr, qr/WARNING:  could not re-encrypt table "locked": another session kept it locked past lock_timeout/,
	'drain() warns about the locked table and goes on');
like($stderr, qr/WARNING:  could not re-encrypt table "predicate": predicate armed/,
	'drain() warns about the failing table and goes on');

# The tenant lets go and its tables behave: everything drains, the old key goes.
$holder->query_safe('COMMIT; SELECT pg_advisory_unlock_all();');
$holder->quit;
$node->safe_psql('postgres', 'DELETE FROM tenant.flags');
ok( wait_for(
		$node, 'postgres',
		qq{SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old_key},
		'destroyed', 180, 'the old key destroyed'),
	'once the tenant\'s tables behave, they drain and the old key is destroyed');
is( $node->safe_psql(
		'postgres', q{
SELECT (SELECT count(*) FROM tenant.predicate WHERE pgcrypt_at_rest.decrypt_text(v) = 'pred ' || id)
     + (SELECT count(*) FROM tenant.stubborn WHERE pgcrypt_at_rest.decrypt_text(v) = 'stubborn ' || id)
     + (SELECT count(*) FROM tenant.locked WHERE pgcrypt_at_rest.decrypt_text(v) = 'locked ' || id)
     + (SELECT count(*) FROM tenant.slow WHERE pgcrypt_at_rest.decrypt_text(v, int4send(id)) = 'slow ' || id)}),
	'50', 'every value of the once-failing tables decrypts to its original');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pgcrypt_at_rest.rotation_failure'),
	'0', 'no failure is left on record');

$node->stop;
done_testing();
