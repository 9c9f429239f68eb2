# Anyone who may create tables can create thousands with an encrypted
# column.  A count that locks every table at once would fill the shared lock
# table, and every session's next lock would fail.  Here the lock table is
# small (max_locks_per_transaction 10): the pass's counts let each table go
# once counted, so rotation goes on, while the count that destroys a key
# says it cannot lock that many tables and keeps the key, instead of
# failing for everyone.  Once the tables are gone, the key is destroyed.

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
max_connections = 10
max_locks_per_transaction = 10
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = 0
pgcrypt_at_rest.rotation_delay = 0
});
$node->start;

my $old_key = $node->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
});
$node->safe_psql('postgres',
	q{CREATE TABLE victim AS SELECT i AS id, pgcrypt_at_rest.encrypt('v' || i, 'ring') AS v FROM generate_series(1, 50) i});
# more empty tables than half the lock table holds; each in its own transaction
my $budget = $node->safe_psql('postgres',
	q{SELECT current_setting('max_locks_per_transaction')::int * (current_setting('max_connections')::int + 1 + 3 + current_setting('max_worker_processes')::int + current_setting('max_wal_senders')::int) / 2});
my $ntables = $budget + 50;
$node->safe_psql('postgres', "CREATE TABLE many_$_ (v pgcrypt_at_rest.encrypted)") for 1 .. $ntables;

my $new_key = $node->safe_psql('postgres', q{SELECT pgcrypt_at_rest.rotate_keyring('ring')});

ok( wait_for(
		$node, 'postgres',
		"SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $new_key) FROM victim",
		'50', 60, 'the victim drained'),
	"the values are re-encrypted although $ntables tables have encrypted columns");
ok( wait_for(
		$node, 'postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'pgcrypt_at_rest worker'},
		't', 10, 'a worker'),
	'the worker is running');
my $deadline = time() + 60;
my $log = '';
until ($log =~ /cannot count the values under key $old_key: \d+ tables would have to be locked at once/
	  || time() > $deadline)
{
	sleep 1;
	$log = slurp_file($node->logfile);
}
like($log, qr/cannot count the values under key $old_key: \d+ tables would have to be locked at once/,
	'the count before destruction says it cannot lock that many tables');
unlike($log, qr/out of shared memory/, 'and the lock table never filled');
is($node->safe_psql('postgres', "SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old_key"),
	'deprecated', 'the old key is kept meanwhile');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE TABLE after_the_count (i int)');
is($ret, 0, 'other sessions still take locks') or diag($stderr);

# destroy_key() cannot count either, and refuses whatever bound it is given.
($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT pgcrypt_at_rest.destroy_key($old_key, 1000000)");
like($stderr, qr/ERROR:  could not count the values under key $old_key/,
	'destroy_key() refuses to destroy a key it cannot count, whatever its bound');
is($node->safe_psql('postgres', "SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old_key"),
	'deprecated', 'and the key is kept');

# Fewer tables: the key goes, once an idle transaction that began before
# ends; meanwhile rotation_status names it.
my $idle = $node->background_psql('postgres');
$idle->query_safe('BEGIN; SELECT 1;');
my $idle_pid = $idle->query_safe('SELECT pg_backend_pid()');
$node->safe_psql('postgres', "DROP TABLE many_$_") for 1 .. $ntables;
ok( wait_for(
		$node, 'postgres',
		qq{SELECT count(*) > 0 FROM pgcrypt_at_rest.rotation_status
		    WHERE key_id = $old_key AND last_error LIKE 'destruction waits for % transaction(s)%'},
		't', 60, 'rotation_status says destruction waits'),
	'rotation_status says the destruction waits for older transactions');
like(
	$node->safe_psql('postgres',
		"SELECT string_agg(last_error, ' ') FROM pgcrypt_at_rest.rotation_status WHERE key_id = $old_key"),
	qr/pid $idle_pid/, 'and names the idle transaction\'s pid');
is($node->safe_psql('postgres', "SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old_key"),
	'deprecated', 'the key waits for it');
$idle->query_safe('COMMIT');
$idle->quit;
ok( wait_for(
		$node, 'postgres',
		"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old_key",
		'destroyed', 60, 'the old key destroyed'),
	'once the tables are dropped, the old key is destroyed');

$node->stop;
done_testing();
