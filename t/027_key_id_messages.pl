# Warnings and notices that name a key or count keys.  Key ids are random,
# and a regression test cannot mask a WARNING or NOTICE (PL/pgSQL cannot
# catch them), so their wording is checked here, with the ids the test
# knows: deprecating a deprecated key, and destroy_key() destroying a key
# that values are still under, with the columns it could not count.  And
# the worker's warning, in the log, about live keys this server holds no
# copy of in a database (a move to a new secret made in another database
# only, say).

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($node) = preloaded_node('messages',
	conf => "pgcrypt_at_rest.worker_enabled = off\npgcrypt_at_rest.destroy_grace = 0\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pgcrypt_at_rest');
my $key1 = $node->safe_psql('postgres', q{SELECT pgcrypt_at_rest.create_keyring('rot')});
cmp_ok($key1, '>=', 2**24, 'a new key id is drawn above the serial ids of older versions');

# a forged value (well-formed, under key1, opened by no key) pins key1
$node->safe_psql(
	'postgres', q{
CREATE TABLE cards (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO cards VALUES (1, pgcrypt_at_rest.encrypt('card', 'rot'));
INSERT INTO cards SELECT 2, pgcrypt_at_rest.encrypted(overlay(v::bytea
	placing decode(repeat('00', octet_length(v::bytea) - 29), 'hex') from 30)) FROM cards;
});
my $key2 = $node->safe_psql('postgres', q{SELECT pgcrypt_at_rest.rotate_keyring('rot')});

my ($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT pgcrypt_at_rest.deprecate_key($key1)");
is($ret, 0, 'deprecating a deprecated key is no error');
like($stderr, qr/NOTICE:  key $key1 of keyring "rot" is already deprecated/, 'but a notice that names it');

is($node->safe_psql('postgres', 'SELECT pgcrypt_at_rest.drain()'), '1', 'the drain re-encrypts the real value');

# destroyed anyway, with the count, and said loudly; a temporary table of
# the session cannot be counted, and the warning names it
($ret, $stdout, $stderr) = $node->psql(
	'postgres', qq{
CREATE TEMP TABLE stash (v pgcrypt_at_rest.encrypted);
SELECT pgcrypt_at_rest.destroy_key($key1, unreadable_values => 1);
});
is($ret, 0, 'destroy_key() with the exact count destroys the key');
is($stdout, '1', 'and returns how many values are lost');
like($stderr, qr/WARNING:  key $key1 destroyed: 1 value under it can never be read again/,
	'the warning names the key and the values lost');
like($stderr, qr/DETAIL:  Nor can any value under it in these columns, which could not be counted: pg_temp\.stash\.v \(a temporary table\)\./,
	'and the columns it could not count');
is($node->safe_psql('postgres', "SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $key1"),
	'destroyed', 'the key is destroyed');

($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT pgcrypt_at_rest.decrypt(v) FROM cards WHERE id = 1");
is($ret, 0, 'the real value, re-encrypted, still decrypts');

# The worker says which database holds keys this server cannot open.
$node->safe_psql('postgres', 'CREATE DATABASE forgotten');
$node->safe_psql(
	'forgotten', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('a');
SELECT pgcrypt_at_rest.create_keyring('b');
DELETE FROM pgcrypt_at_rest.sealed_key
 WHERE key_id = (SELECT active_key_id FROM pgcrypt_at_rest.keyrings WHERE name = 'a');
});
$node->append_conf('postgresql.conf', "pgcrypt_at_rest.worker_enabled = on\npgcrypt_at_rest.worker_naptime = '1s'\n");
$node->restart;
ok( $node->wait_for_log(
		qr/WARNING:  pgcrypt_at_rest: this server holds no copy of 1 of the 2 live keys in database "forgotten"/),
	'the worker warns about the key this server cannot open there');
ok($node->log_contains(qr/HINT:  In that database, on a server that can open them, run add_server\(\) for this server/),
	'and says what to run');
ok(!$node->log_contains(qr/holds no copy of \d+ of the \d+ live keys in database "postgres"/),
	'and says nothing of a database where it holds every key');

$node->stop;
done_testing();
