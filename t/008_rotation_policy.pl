# Rotation policies applied by the worker, with nobody calling
# rotate_keyring(): a keyring with rotate_after is rotated once its active key
# is older than that; a keyring with max_encryptions is rotated once its
# active key has encrypted that many values.  Encryption counts are persisted
# into data_key.encryptions by the worker and survive a restart (a count
# begun before the restart and finished after it triggers the rotation).
# alter_keyring(name, NULL, NULL) stops the rotations.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

# A long destroy_grace keeps the rotated keys as deprecated: only rotations
# change the keys view.
my ($node) = preloaded_node(
	'main', conf => q{
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = '1h'
pgcrypt_at_rest.rotation_delay = 0
});
$node->start;

sub key_count
{
	my ($keyring) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pgcrypt_at_rest.keys WHERE keyring = '$keyring'");
}

sub active_key
{
	my ($keyring) = @_;
	return $node->safe_psql('postgres',
		"SELECT active_key_id FROM pgcrypt_at_rest.keyrings WHERE name = '$keyring'");
}

$node->safe_psql('postgres', 'CREATE EXTENSION pgcrypt_at_rest');
my $age_first =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('by_age')");
my $count_first =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('by_count')");
my $none_first =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('no_policy')");

# Arguments are checked.
{
	my ($stdout, $stderr) = ('', '');
	$node->psql('postgres', "SELECT pgcrypt_at_rest.alter_keyring('by_count', NULL, 0)",
		stdout => \$stdout, stderr => \$stderr);
	like($stderr, qr/max_encryptions must be positive/, 'max_encryptions 0 is refused');
	$node->psql('postgres', "SELECT pgcrypt_at_rest.alter_keyring('missing', NULL, 10)",
		stdout => \$stdout, stderr => \$stderr);
	like($stderr, qr/keyring "missing" does not exist/, 'an unknown keyring is refused');
}

##############################################################################
# By age.
##############################################################################

$node->safe_psql('postgres',
	"SELECT pgcrypt_at_rest.alter_keyring('by_age', '2 seconds', NULL)");
is( $node->safe_psql('postgres',
		"SELECT rotate_after, max_encryptions IS NULL FROM pgcrypt_at_rest.keyrings WHERE name = 'by_age'"),
	'00:00:02|t', 'keyrings view shows the age policy');

ok( wait_for(
		$node, 'postgres',
		"SELECT count(*) >= 2 FROM pgcrypt_at_rest.keys WHERE keyring = 'by_age'",
		't', 60, 'a second key in "by_age"'),
	'the worker rotated "by_age" once its key was older than rotate_after');
is( $node->safe_psql('postgres',
		"SELECT status, deprecated_at - created_at >= interval '2 seconds' FROM pgcrypt_at_rest.keys WHERE key_id = $age_first"),
	'deprecated|t', 'the first key was deprecated, no sooner than rotate_after');
isnt(active_key('by_age'), $age_first, 'another key is active');
ok( $node->log_contains(
		qr/pgcrypt_at_rest rotated keyring "by_age" as its policy asks; the new key is \d+/),
	'the rotation by policy is logged');

##############################################################################
# By number of encryptions.
##############################################################################

$node->safe_psql('postgres',
	"SELECT pgcrypt_at_rest.alter_keyring('by_count', NULL, 1000)");
is( $node->safe_psql('postgres',
		"SELECT rotate_after IS NULL, max_encryptions FROM pgcrypt_at_rest.keyrings WHERE name = 'by_count'"),
	't|1000', 'keyrings view shows the count policy');

# 900 encryptions: under the limit, no rotation.  Only 100 values are kept,
# so that re-encrypting them does not bring the next key near its limit.
$node->safe_psql(
	'postgres', q{
CREATE TABLE counted (id int PRIMARY KEY, plain text NOT NULL, v pgcrypt_at_rest.encrypted);
INSERT INTO counted
	SELECT i, 'counted ' || i, pgcrypt_at_rest.encrypt('counted ' || i, 'by_count')
	  FROM generate_series(1, 100) i;
SELECT count(pgcrypt_at_rest.encrypt('discarded ' || i, 'by_count'))
  FROM generate_series(1, 800) i;
});
ok( wait_for(
		$node, 'postgres',
		"SELECT encryptions FROM pgcrypt_at_rest.keys WHERE key_id = $count_first",
		'900', 30, 'the 900 encryptions to be persisted'),
	'the worker persisted the 900 encryptions into data_key.encryptions');
# Three naps: the policy is checked every nap.
sleep(3);
is(key_count('by_count'), '1', 'under max_encryptions, "by_count" is not rotated');

# 600 more, in one committed transaction: 1,500 in all.
$node->safe_psql(
	'postgres', q{
BEGIN;
SELECT count(pgcrypt_at_rest.encrypt('discarded ' || i, 'by_count'))
  FROM generate_series(1, 600) i;
COMMIT;
});
ok( wait_for(
		$node, 'postgres',
		"SELECT count(*) FROM pgcrypt_at_rest.keys WHERE keyring = 'by_count'",
		'2', 30, 'a second key in "by_count"'),
	'the worker rotated "by_count" once its key reached max_encryptions');
is( $node->safe_psql('postgres',
		"SELECT status, encryptions FROM pgcrypt_at_rest.keys WHERE key_id = $count_first"),
	'deprecated|1500', 'the first key was deprecated with its 1,500 encryptions persisted');
ok( $node->log_contains(
		qr/pgcrypt_at_rest rotated keyring "by_count" as its policy asks; the new key is \d+/),
	'the rotation by count is logged');
my $count_second = active_key('by_count');
isnt($count_second, $count_first, 'another key is active in "by_count"');

# The kept values are drained to the new key; re-encryptions are not counted
# (a copy of existing data would otherwise rotate the keyring again and again).
ok( wait_for(
		$node, 'postgres', qq{
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $count_second
                          AND pgcrypt_at_rest.decrypt_text(v) = plain)
  FROM counted},
		'100', 30, 'the 100 values to be re-encrypted'),
	'the values under the rotated key are drained to the new key');
is( $node->safe_psql('postgres',
		"SELECT encryptions FROM pgcrypt_at_rest.keys WHERE key_id = $count_second"),
	'0', 'the re-encryptions are not counted for the new key');

##############################################################################
# Counts survive a restart.
##############################################################################

$node->safe_psql('postgres',
	"SELECT count(pgcrypt_at_rest.encrypt('before restart ' || i, 'by_count')) FROM generate_series(1, 500) i");
ok( wait_for(
		$node, 'postgres',
		"SELECT encryptions FROM pgcrypt_at_rest.keys WHERE key_id = $count_second",
		'500', 30, 'the 500 encryptions to be persisted'),
	'500 encryptions of the second key are persisted before the restart');
is(key_count('by_count'), '2', 'no rotation at 500 of 1,000');

$node->restart;
cmp_ok(
	$node->safe_psql('postgres',
		"SELECT encryptions FROM pgcrypt_at_rest.keys WHERE key_id = $count_second"),
	'>=', 500, 'after the restart, data_key.encryptions is still at least 500');
is(active_key('by_count'), $count_second, 'the second key is still active after the restart');

# 500 more after the restart: 1,000 only if the count before it was kept.
$node->safe_psql('postgres',
	"SELECT count(pgcrypt_at_rest.encrypt('after restart ' || i, 'by_count')) FROM generate_series(1, 500) i");
ok( wait_for(
		$node, 'postgres',
		"SELECT count(*) FROM pgcrypt_at_rest.keys WHERE keyring = 'by_count'",
		'3', 30, 'a third key in "by_count"'),
	'a count begun before the restart and finished after it triggers the rotation');
is( $node->safe_psql('postgres',
		"SELECT status, encryptions FROM pgcrypt_at_rest.keys WHERE key_id = $count_second"),
	'deprecated|1000', 'the second key was deprecated with 500 + 500 encryptions');

##############################################################################
# NULL, NULL: no more rotations.
##############################################################################

$node->safe_psql(
	'postgres', q{
SELECT pgcrypt_at_rest.alter_keyring('by_age', NULL, NULL);
SELECT pgcrypt_at_rest.alter_keyring('by_count', NULL, NULL);
});
is( $node->safe_psql('postgres',
		"SELECT name, rotate_after IS NULL, max_encryptions IS NULL FROM pgcrypt_at_rest.keyrings WHERE name IN ('by_age', 'by_count') ORDER BY name"),
	"by_age|t|t\nby_count|t|t", 'keyrings view shows no policy');

# A rotation decided before the change may still land: let a nap pass.
sleep(2);
my $age_keys = key_count('by_age');
my $age_active = active_key('by_age');
my $count_keys = key_count('by_count');
my $count_active = active_key('by_count');

# Past the old limit, and past the old age.
$node->safe_psql('postgres',
	"SELECT count(pgcrypt_at_rest.encrypt('no policy ' || i, 'by_count')) FROM generate_series(1, 1500) i");
ok( wait_for(
		$node, 'postgres',
		"SELECT encryptions >= 1500 FROM pgcrypt_at_rest.keys WHERE key_id = $count_active",
		't', 30, 'the 1,500 encryptions to be persisted'),
	'the encryptions past the old limit are persisted');
# Three naps: each would have rotated "by_age" under its old policy.
sleep(4);
is(key_count('by_age'), $age_keys, '"by_age" is no longer rotated');
is(active_key('by_age'), $age_active, '"by_age" keeps its active key');
is(key_count('by_count'), $count_keys, '"by_count" is no longer rotated');
is(active_key('by_count'), $count_active, '"by_count" keeps its active key');
is(key_count('no_policy'), '1', 'a keyring without a policy was never rotated');

# Nobody but the worker rotated anything (every statement is logged).
ok(!$node->log_contains(qr/rotate_keyring/), 'rotate_keyring() was never called');

$node->stop;
done_testing();
