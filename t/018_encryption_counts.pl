# Encryption counts are exact (a per-key cap will rely on them).  Backends
# count in shared memory; the worker takes the counts out and adds them to
# data_key in a transaction of its own.  Here that transaction fails (a
# trigger on data_key, standing for any error in the step) while values
# are being encrypted: the counts it took out go back to shared memory, and
# once it succeeds keys.encryptions is exactly the number of encrypt()
# calls, none lost and none counted twice.

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
});
$node->start;

my $key = $node->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
});

# Persisting fails while the switch is on.
$node->safe_psql(
	'postgres', q{
CREATE TABLE count_switch (failing bool);
INSERT INTO count_switch VALUES (true);
CREATE FUNCTION refuse_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF (SELECT failing FROM public.count_switch) AND NEW.encryptions <> OLD.encryptions THEN
		RAISE EXCEPTION 'persisting encryption counts fails here';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_counts BEFORE UPDATE ON pgcrypt_at_rest.data_key
	FOR EACH ROW EXECUTE FUNCTION refuse_counts();
});

# 3 x 1,500 encryptions, in separate transactions, one of them rolled back
# (its nonces were used all the same, so it counts).
$node->safe_psql('postgres',
	q{CREATE TABLE t AS SELECT pgcrypt_at_rest.encrypt('a' || i, 'ring') AS v FROM generate_series(1, 1500) i});
$node->safe_psql('postgres',
	q{INSERT INTO t SELECT pgcrypt_at_rest.encrypt('b' || i, 'ring') FROM generate_series(1, 1500) i});
$node->safe_psql('postgres',
	q{BEGIN; INSERT INTO t SELECT pgcrypt_at_rest.encrypt('c' || i, 'ring') FROM generate_series(1, 1500) i; ROLLBACK;});

my $log = '';
my $deadline = time() + 60;
until ($log =~ /persisting encryption counts fails here/ || time() > $deadline)
{
	sleep 1;
	$log = slurp_file($node->logfile);
}
like($log, qr/applying rotation policies failed: persisting encryption counts fails here/,
	'the worker tried to persist the counts and failed');
is($node->safe_psql('postgres', "SELECT encryptions FROM pgcrypt_at_rest.keys WHERE key_id = $key"),
	'0', 'nothing was persisted while it failed');

# It works again: every count is there, exactly.
$node->safe_psql('postgres', 'UPDATE count_switch SET failing = false');
ok( wait_for(
		$node, 'postgres',
		"SELECT encryptions FROM pgcrypt_at_rest.keys WHERE key_id = $key",
		'4500', 60, 'the counts persisted'),
	'after the failures, keys.encryptions is exactly the 4,500 encryptions, none lost');
sleep 3;
is($node->safe_psql('postgres', "SELECT encryptions FROM pgcrypt_at_rest.keys WHERE key_id = $key"),
	'4500', 'and none counted twice a few naps later');

$node->stop;
done_testing();
