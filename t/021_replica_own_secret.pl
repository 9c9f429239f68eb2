# A physical streaming replica runs with a secret of its own.  Before the
# primary adds it, it cannot decrypt, and says what to run where; once
# add_server() on the primary reaches it through WAL, it decrypts every row
# without a restart, and keys made afterwards too.  After remove_server()
# on the primary, values under new keys do not decrypt on it, and once the
# drain has destroyed the old keys, nothing does.  No rotation worker runs
# on the standby.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($primary) = preloaded_node(
	'primary',
	init => { allows_streaming => 1 },
	conf => q{
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = 0
pgcrypt_at_rest.rotation_delay = 0
});
$primary->start;
$primary->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
CREATE TABLE t AS SELECT i AS id, pgcrypt_at_rest.encrypt('row ' || i, 'ring') AS v
  FROM generate_series(1, 20) i;
});

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
my $standby_key = write_secret_file(PostgreSQL::Test::Utils::tempdir . '/standby.key');
$standby->append_conf('postgresql.conf', "pgcrypt_at_rest.server_key_file = '$standby_key'");
$standby->start;
$primary->wait_for_catchup($standby);

my $decrypts = q{SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'row ' || id) FROM t};
my $standby_public = $standby->safe_psql('postgres', 'SELECT pgcrypt_at_rest.server_public_key()');
isnt($standby_public, $primary->safe_psql('postgres', 'SELECT pgcrypt_at_rest.server_public_key()'),
	'the standby runs with a secret of its own');

# Not added yet: a clear error, whose hint is the call to run on the primary.
my ($ret, $stdout, $stderr) = $standby->psql('postgres', $decrypts);
like($stderr, qr/ERROR:  this server holds no copy of key \d+ of keyring "ring"/,
	'before add_server(), the standby cannot decrypt');
like($stderr, qr/HINT:  On a server that can open the key, add this one: SELECT pgcrypt_at_rest\.add_server\('a name for this server', '\Q$standby_public\E'\);/,
	'the hint gives the add_server() call with the standby\'s public key');

# Added on the primary: the standby decrypts, without a restart.
is( $primary->safe_psql('postgres', "SELECT pgcrypt_at_rest.add_server('standby', '$standby_public')"),
	'1', 'add_server() on the primary sealed its one live key for the standby');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', $decrypts), '20', 'the standby decrypts every row, with no restart');
is( $primary->safe_psql('postgres',
		q{SELECT string_agg(name || ':' || live_keys_held || ':' || live_keys_missing || ':' || this_server, ' ' ORDER BY this_server)
		    FROM pgcrypt_at_rest.servers WHERE name = 'standby' OR this_server}),
	'standby:1:0:false ' . $primary->safe_psql('postgres', 'SELECT name FROM pgcrypt_at_rest.servers WHERE this_server') . ':1:0:true',
	'servers: both hold the live key, none missing, and the primary is this server');
is( $standby->safe_psql('postgres', q{SELECT name FROM pgcrypt_at_rest.servers WHERE this_server}),
	'standby', 'on the standby, servers says it is the standby');

# The server set changes on the primary only: a standby says so.
($ret, $stdout, $stderr) = $standby->psql('postgres', "SELECT pgcrypt_at_rest.remove_server('standby')");
like($stderr, qr/ERROR:  remove_server\(\) cannot run on a standby\n.*HINT:  Run it on the primary/s,
	'remove_server() on the standby is refused, pointing to the primary');

# Keys made later are sealed to it too.
my $key2 = $primary->safe_psql('postgres', q{SELECT pgcrypt_at_rest.rotate_keyring('ring')});
$primary->safe_psql('postgres',
	q{INSERT INTO t SELECT i, pgcrypt_at_rest.encrypt('row ' || i, 'ring') FROM generate_series(21, 30) i});
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', $decrypts), '30', 'values under a key made after add_server() decrypt on the standby');

# No rotation worker on a standby; the primary's drains the old key.
is( $standby->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pgcrypt_at_rest%'}),
	'0', 'no launcher or worker runs on the standby');

# The standby leaves: new keys do not open there.
$primary->safe_psql('postgres', q{SELECT pgcrypt_at_rest.remove_server('standby')});
$primary->safe_psql('postgres',
	q{INSERT INTO t SELECT i, pgcrypt_at_rest.encrypt('row ' || i, 'ring') FROM generate_series(31, 35) i});
$primary->wait_for_catchup($standby);
($ret, $stdout, $stderr) = $standby->psql('postgres', q{SELECT pgcrypt_at_rest.decrypt_text(v) FROM t WHERE id = 35});
like($stderr, qr/this server holds no copy of key \d+ of keyring "ring"/,
	'after remove_server(), a value under the new key does not decrypt on the standby');

# Once the drain has destroyed every key it could open, nothing does.
ok( wait_for(
		$primary, 'postgres',
		qq{SELECT count(*) FROM pgcrypt_at_rest.keys WHERE status = 'destroyed'
		      AND generation <= (SELECT generation FROM pgcrypt_at_rest.keys WHERE key_id = $key2)},
		'2', 60, 'the keys the standby could open destroyed'),
	'the primary drained and destroyed every key the standby could open');
$primary->wait_for_catchup($standby);
($ret, $stdout, $stderr) = $standby->psql('postgres', $decrypts);
like($stderr, qr/this server holds no copy of key \d+ of keyring "ring"/,
	'the standby decrypts nothing any more');
is($primary->safe_psql('postgres', $decrypts), '35', 'the primary decrypts every row');

$standby->stop;
$primary->stop;
done_testing();
