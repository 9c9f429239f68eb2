# Failover: the primary is lost, its standby (with a secret of its own,
# added before) is promoted.  The rotation worker starts there once it is a
# primary.  remove_server() of the old primary, run on the new one, replaces
# every key the old primary could open; the new primary drains and destroys
# them, every value still decrypts, and the keys it makes are sealed to it
# alone: the old primary's secret opens nothing written from then on.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($old) = preloaded_node(
	'old', init => { allows_streaming => 1 }, conf => q{
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = 0
pgcrypt_at_rest.rotation_delay = 0
});
$old->start;
$old->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
SELECT pgcrypt_at_rest.create_keyring('other');
CREATE TABLE t AS SELECT i AS id, pgcrypt_at_rest.encrypt('row ' || i, CASE WHEN i % 2 = 0 THEN 'ring' ELSE 'other' END) AS v
  FROM generate_series(1, 40) i;
});
my $old_name = $old->safe_psql('postgres', 'SELECT name FROM pgcrypt_at_rest.servers WHERE this_server');

$old->backup('base');
my $new = PostgreSQL::Test::Cluster->new('new');
$new->init_from_backup($old, 'base', has_streaming => 1);
my $new_secret = write_secret_file(PostgreSQL::Test::Utils::tempdir . '/new.key');
$new->append_conf('postgresql.conf', "pgcrypt_at_rest.server_key_file = '$new_secret'");
$new->start;
my $new_public = $new->safe_psql('postgres', 'SELECT pgcrypt_at_rest.server_public_key()');
$old->safe_psql('postgres', "SELECT pgcrypt_at_rest.add_server('new', '$new_public')");
$old->wait_for_catchup($new);

# The primary is lost; the standby takes over.
$old->stop('immediate');
$new->promote;
ok( wait_for(
		$new, 'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcrypt_at_rest launcher'},
		'1', 60, 'the launcher on the promoted server'),
	'the rotation launcher starts once the standby is promoted');

my $decrypts = q{SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'row ' || id) FROM t};
is($new->safe_psql('postgres', $decrypts), '40', 'the new primary decrypts every row');

# The old primary leaves, from the new one.
my $held = $new->safe_psql('postgres', "SELECT pgcrypt_at_rest.remove_server('$old_name')");
is($held, '2', 'remove_server() of the old primary: it held both live keys');
ok( wait_for(
		$new, 'postgres',
		q{SELECT count(*) FILTER (WHERE status = 'destroyed') || '/' || count(*) FILTER (WHERE status = 'active')
		    FROM pgcrypt_at_rest.keys},
		'2/2', 90, 'the old keys destroyed'),
	'the new primary drained and destroyed every key the old primary could open');
is($new->safe_psql('postgres', $decrypts), '40', 'every row still decrypts');
is( $new->safe_psql('postgres',
		q{SELECT string_agg(k.key_id || ':' || k.sealed_copies, ' ' ORDER BY k.key_id)
		    FROM pgcrypt_at_rest.keys k WHERE k.status = 'active'}) =~ /^\d+:1 \d+:1$/ ? 'one copy each' : 'more',
	'one copy each', 'the active keys are sealed to the new primary alone');
is( $new->safe_psql('postgres', q{SELECT string_agg(name, ',') FROM pgcrypt_at_rest.servers}),
	'new', 'servers lists the new primary only');

$new->stop;
done_testing();
