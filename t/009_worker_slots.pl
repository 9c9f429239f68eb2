# With few background worker slots and many databases, the databases without
# the extension must not keep the one with it from getting its worker: their
# workers leave at once and hold no slot.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# the launcher and the logical replication launcher take two of the three
my ($node) = preloaded_node(
	'slots', conf => qq{
max_worker_processes = 3
pgcrypt_at_rest.worker_naptime = '1s'
});
$node->start;

$node->safe_psql('postgres', "CREATE DATABASE empty$_") for 1 .. 5;
$node->safe_psql('postgres', 'CREATE DATABASE wanted');
$node->safe_psql('wanted', 'CREATE EXTENSION pgcrypt_at_rest');

ok( wait_for(
		$node, 'postgres',
		q{SELECT count(*) FROM pg_stat_activity
		   WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'wanted'},
		'1', 60, 'a worker for "wanted"'),
	'the database with the extension gets its worker despite five without it');

# once each empty database has been visited (and found without the
# extension), it keeps it: they never displace it again
ok( wait_for(
		$node, 'wanted',
		q{SELECT count(*) FROM pgcrypt_at_rest.rotation_workers
		   WHERE database <> 'wanted' AND last_visit_ended_at IS NOT NULL AND state <> 'waiting'},
		'6', 60, 'the five empty databases and postgres visited'),
	'every database without the extension was visited once');
ok( wait_for(
		$node, 'postgres',
		q{SELECT count(*) FROM pg_stat_activity
		   WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'wanted'},
		'1', 60, 'a worker for "wanted" again'),
	'the database with the extension has its worker');
sleep(3);
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity
		   WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'wanted'}),
	'1', 'the worker of "wanted" is still running a few naps later');
ok(!$node->log_contains(qr/no free worker slot/), 'no worker went without a slot of the extension');

$node->stop;
done_testing();
