# Twenty databases with the extension on a server with the default eight
# background worker slots (small batches with pauses, so that draining a
# database takes longer than a nap): the launcher runs at most
# pgcrypt_at_rest.max_workers (3) workers at once, and every database gets
# its turn.  Each database has a deprecated key over values: all of them
# drain and their old keys are destroyed.  Meanwhile rotation_workers shows
# databases waiting for a worker, and the log says so.  Afterwards, with
# the pool idle, a rotation policy set in one database is still applied:
# every database is visited in turn, signalled or not.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $ndb = 20;
my ($node) = preloaded_node(
	'pool', conf => q{
max_worker_processes = 8
pgcrypt_at_rest.max_workers = 3
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = 0
pgcrypt_at_rest.rotation_batch_size = 50
pgcrypt_at_rest.rotation_delay = '300ms'
pgcrypt_at_rest.worker_enabled = off
});
$node->start;

# Each database: a keyring, 200 values, then a rotation (the old key deprecated).
my (%old_key, %new_key);
for my $i (1 .. $ndb)
{
	my $db = "db$i";
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$old_key{$db} = $node->safe_psql(
		$db, q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
});
	$node->safe_psql(
		$db, qq{
CREATE TABLE t AS SELECT i AS id, pgcrypt_at_rest.encrypt('$db ' || i, 'ring') AS v
  FROM generate_series(1, 200) i;
});
	$new_key{$db} =
	  $node->safe_psql($db, q{SELECT pgcrypt_at_rest.rotate_keyring('ring')});
}

# Let the workers go, all at once.
$node->append_conf('postgresql.conf', 'pgcrypt_at_rest.worker_enabled = on');
$node->reload;

# Watch the pool while every database drains.
my %seen_waiting;
my $max_running = 0;
my $deadline = time() + 240;
my @left = sort keys %old_key;
while (@left && time() < $deadline)
{
	for my $row (split /\n/,
		$node->safe_psql('db1', q{SELECT database, state FROM pgcrypt_at_rest.rotation_workers}))
	{
		my ($db, $state) = split /\|/, $row;
		$seen_waiting{$db} = 1 if $state eq 'waiting';
	}
	my $running = $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcrypt_at_rest worker'});
	$max_running = $running if $running > $max_running;
	@left = grep {
		$node->safe_psql($_,
			"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old_key{$_}") ne 'destroyed'
	} @left;
	usleep(200_000);
}
is(join(',', @left), '', "every one of the $ndb databases drained and destroyed its old key");

my $under_new = 0;
for my $db (sort keys %old_key)
{
	$under_new += $node->safe_psql($db, qq{
SELECT count(*) FROM t
 WHERE pgcrypt_at_rest.key_id(v) = $new_key{$db} AND pgcrypt_at_rest.decrypt_text(v) = '$db ' || id});
}
is($under_new, 200 * $ndb, 'every value is under its database\'s new key and decrypts');

cmp_ok(scalar(keys %seen_waiting), '>=', 1,
	'rotation_workers showed databases waiting for a worker: ' . join(',', sort keys %seen_waiting));
cmp_ok($max_running, '<=', 3, "never more than max_workers workers at once (saw $max_running)");
like(slurp_file($node->logfile), qr/database "db\d+" is waiting for a rotation worker/,
	'the log says which database waits for a worker');
unlike(slurp_file($node->logfile), qr/no background worker slot is free/,
	'the pool stayed within max_worker_processes');

# No rotation was signalled in db7: a policy set there is applied all the same.
$node->safe_psql('db7', q{SELECT pgcrypt_at_rest.alter_keyring('ring', '1 second', NULL)});
ok( wait_for(
		$node, 'db7',
		qq{SELECT active_key_id <> $new_key{db7} FROM pgcrypt_at_rest.keyrings WHERE name = 'ring'},
		't', 120, 'db7 rotated by its policy'),
	'a database visited in turn gets its rotation policy applied');

$node->stop;
done_testing();
