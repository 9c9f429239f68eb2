# With Citus, a distributed table's rows live in shard tables on the worker
# nodes; on the coordinator the table is an empty shell, and the rotation
# worker, which reads the coordinator's heaps only, cannot see the shards.  So
# in a database where the citus extension is installed no key is ever
# destroyed: not by the worker, not by destroy_drained_keys().
#
# A coordinator and one worker node, both preloading citus and
# pgcrypt_at_rest, each with its own server secret.  A distributed table
# holds 100 values encrypted on the coordinator (so the shards on the worker
# node hold ciphertext under the coordinator's key), a local table a few.
# After rotate_keyring(), the worker re-encrypts the local table's values, but
# the old key stays deprecated: rotation_status says why, the worker logs it
# once, destroy_drained_keys() returns no key and says why in a NOTICE, and
# every value of the distributed table still decrypts.  The worker never ran
# a distributed query (no "could not run distributed query ... FOR UPDATE"
# loop) and no step of it failed.
#
# Skipped when Citus is not installed, unless PCAR_REQUIRE_CITUS=1, when it
# fails instead.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

my $pkglibdir = `pg_config --pkglibdir`;
chomp $pkglibdir;
if (!-f "$pkglibdir/citus.so")
{
	if (($ENV{PCAR_REQUIRE_CITUS} // '') eq '1')
	{
		fail("citus.so is not in \"$pkglibdir\", and PCAR_REQUIRE_CITUS=1 says it must be");
		done_testing();
		exit 1;
	}
	plan skip_all => "Citus is not installed (no citus.so in \"$pkglibdir\")";
}

# citus must come first in shared_preload_libraries; the last line of
# postgresql.conf wins over the one preloaded_node() writes.
my $conf = q{
shared_preload_libraries = 'citus,pgcrypt_at_rest'
max_prepared_transactions = 100
citus.node_conninfo = 'sslmode=disable'
citus.enable_statistics_collection = off
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = 0
pgcrypt_at_rest.rotation_delay = 0
};
my ($coord) = preloaded_node('coordinator', conf => $conf);
my ($worker) = preloaded_node('worker', conf => $conf);
$coord->start;
$worker->start;

# The nodes listen on a Unix socket only: Citus connects to a node through
# libpq with its name as the host, and a directory is a socket directory.
$worker->safe_psql('postgres', 'CREATE EXTENSION citus');
$coord->safe_psql('postgres', 'CREATE EXTENSION citus');
$coord->safe_psql('postgres',
	"SELECT citus_set_coordinator_host('" . $coord->host . "', " . $coord->port . ")");
$coord->safe_psql('postgres',
	"SELECT citus_add_node('" . $worker->host . "', " . $worker->port . ")");
is( $coord->safe_psql('postgres',
		"SELECT count(*) FROM citus_get_active_worker_nodes()"),
	'1', 'Citus: the coordinator has one active worker node');

# Citus propagates CREATE EXTENSION to the worker node.
$coord->safe_psql('postgres', 'CREATE EXTENSION pgcrypt_at_rest');
is( $worker->safe_psql('postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypt_at_rest'"),
	'1', 'the extension exists on the worker node too');

isnt(
	$coord->safe_psql('postgres',
		'SELECT encode(pgcrypt_at_rest.server_public_key(), \'hex\')'),
	$worker->safe_psql('postgres',
		'SELECT encode(pgcrypt_at_rest.server_public_key(), \'hex\')'),
	'the two nodes have server secrets of their own');

my $key_a =
  $coord->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('ring')");

$coord->safe_psql(
	'postgres', q{
CREATE TABLE d (id int, v pgcrypt_at_rest.encrypted);
SELECT create_distributed_table('d', 'id');
INSERT INTO d SELECT i, pgcrypt_at_rest.encrypt('d ' || i, 'ring')
  FROM generate_series(1, 100) i;
CREATE TABLE local_t (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO local_t SELECT i, pgcrypt_at_rest.encrypt('local ' || i, 'ring')
  FROM generate_series(1, 5) i;
});

# Where the values are: none in the coordinator's heap of d, all 100 in the
# shards, every shard on the worker node, under the coordinator's first key.
is($coord->safe_psql('postgres', "SELECT pg_relation_size('d')"),
	'0', 'the distributed table is an empty shell on the coordinator');
is( $coord->safe_psql(
		'postgres', qq{
SELECT count(*) > 0 AND bool_and(nodename = '@{[ $worker->host ]}' AND nodeport = @{[ $worker->port ]})
  FROM citus_shards WHERE table_name = 'd'::regclass}),
	't', 'every shard of d is on the worker node');
my $shard_sql = qq{
SELECT sum(split_part(result, '|', 1)::int) || '|' || sum(split_part(result, '|', 2)::int)
  FROM run_command_on_shards('d',
	\$\$SELECT count(*) || '|' || count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $key_a) FROM %s\$\$)};
is($coord->safe_psql('postgres', $shard_sql),
	'100|100', 'the shards hold the 100 values, under the first key');

# decrypt_text() must run on the coordinator, where the key is (the worker
# node's key tables do not have it, so a decrypt_text() pushed down to the
# shards fails there): a materialized CTE brings the rows to the coordinator,
# which evaluates the rest of the query.
my $decrypt_sql = q{
WITH s AS MATERIALIZED (SELECT id, v FROM d)
SELECT count(*) FROM s WHERE pgcrypt_at_rest.decrypt_text(v) = 'd ' || id};
is($coord->safe_psql('postgres', $decrypt_sql),
	'100', 'before rotation: every value of d decrypts on the coordinator');

##############################################################################
# Rotate: the worker drains the local table but keeps the old key.
##############################################################################

my $key_b =
  $coord->safe_psql('postgres', "SELECT pgcrypt_at_rest.rotate_keyring('ring')");
isnt($key_b, $key_a, 'rotate_keyring made a new key');

ok( wait_for(
		$coord, 'postgres', qq{
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $key_b
                          AND pgcrypt_at_rest.decrypt_text(v) = 'local ' || id)
  FROM local_t},
		'5', 60, 'the local table to be re-encrypted'),
	"the worker re-encrypted the coordinator's local table under the new key");
ok( wait_for(
		$coord, 'postgres', qq{
SELECT bool_and(destruction_held LIKE 'Citus is installed in this database:%')
  FROM pgcrypt_at_rest.rotation_status WHERE key_id = $key_a},
		't', 60, 'rotation_status to show the Citus hold'),
	'rotation_status says the old key is held because Citus is installed');

# The worker counts the key's values once it finds none left to re-encrypt
# here, and then logs, once, why it does not destroy the key.
ok( wait_for(
		$coord, 'postgres', qq{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'postgres'},
		'1', 60, 'the worker'),
	'the worker for "postgres" runs on the coordinator');
my $hold_re =
  qr/pgcrypt_at_rest does not destroy key $key_a: Citus is installed in this database/;
my $deadline = time() + 120;
sleep(1) until $coord->log_contains($hold_re) || time() > $deadline;
ok($coord->log_contains($hold_re),
	'the worker logs that it does not destroy the old key because Citus is installed');

# More worker cycles, without timing: a copy of an old value of d put in the
# local table is under the old key again, which the worker re-encrypts on a
# later pass; the key is still not destroyed after that.
$coord->safe_psql('postgres',
	'INSERT INTO local_t SELECT id + 1000, v FROM d WHERE id = 1');
ok( wait_for(
		$coord, 'postgres', qq{
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $key_b
                          AND pgcrypt_at_rest.decrypt_text(v) = 'd 1')
  FROM local_t WHERE id = 1001},
		'1', 60, 'the copied old value to be re-encrypted'),
	'a later pass of the worker re-encrypts an old value copied into the local table');

is( $coord->safe_psql(
		'postgres', qq{
SELECT status, sealed_copies, destroyed_at IS NULL, drained_at IS NULL
  FROM pgcrypt_at_rest.keys WHERE key_id = $key_a}),
	'deprecated|1|t|t',
	'after those worker passes the old key is still deprecated, with its sealed copy, not marked drained');
is($coord->safe_psql('postgres', $shard_sql),
	'100|100', 'the shards still hold the 100 values under the old key');

##############################################################################
# destroy_drained_keys() does not destroy it either, and says why.
##############################################################################

{
	my ($stdout, $stderr) = ('', '');
	my $ret = $coord->psql(
		'postgres',
		'SELECT pgcrypt_at_rest.destroy_drained_keys()',
		stdout => \$stdout,
		stderr => \$stderr);
	is($ret, 0, 'destroy_drained_keys() succeeds');
	unlike($stdout, qr/\b$key_a\b/, 'destroy_drained_keys() does not return the old key');
	is($stdout, '{}', 'destroy_drained_keys() destroys no key');
	like(
		$stderr,
		qr/NOTICE:  pgcrypt_at_rest does not destroy key $key_a: Citus is installed in this database/,
		'destroy_drained_keys() says in a NOTICE that Citus holds the key');
}
is( $coord->safe_psql('postgres',
		"SELECT status, sealed_copies FROM pgcrypt_at_rest.keys WHERE key_id = $key_a"),
	'deprecated|1', 'the old key is still deprecated, with its sealed copy');

is($coord->safe_psql('postgres', $decrypt_sql),
	'100', 'every value of the distributed table still decrypts on the coordinator');
is( $coord->safe_psql('postgres',
		"SELECT count(*) FROM local_t WHERE pgcrypt_at_rest.key_id(v) = $key_a"),
	'0', 'no value of the local table is left under the old key');

##############################################################################
# The logs, read while the nodes run (a shutdown logs FATAL lines): the hold
# logged once, no distributed-query loop, no failed step, no error at all.
##############################################################################

my $coord_log = slurp_file($coord->logfile);
my $worker_log = slurp_file($worker->logfile);
my @holds = $coord_log =~ /^.*pgcrypt_at_rest does not destroy key $key_a:.*$/mg;
is(scalar @holds, 1, 'the worker logged the hold of the old key once');
for my $node_log (['coordinator', $coord_log], ['worker node', $worker_log])
{
	my ($name, $text) = @$node_log;
	unlike($text, qr/could not run distributed query/,
		"$name log: no \"could not run distributed query\"");
	my @failed = $text =~ /^.*pgcrypt_at_rest worker:.*failed.*$/mg;
	is(scalar @failed, 0, "$name log: no failed step of the pgcrypt_at_rest worker")
	  or diag(join("\n", @failed[0 .. ($#failed < 9 ? $#failed : 9)]));
	my @errors = $text =~ /^.*\b(?:ERROR|FATAL|PANIC):.*$/mg;
	is(scalar @errors, 0, "$name log: no ERROR, FATAL or PANIC")
	  or diag(join("\n", @errors[0 .. ($#errors < 9 ? $#errors : 9)]));
}

$coord->stop;
$worker->stop;
done_testing();
