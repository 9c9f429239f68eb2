# A server moves to a new secret.  replace_server_key() seals every live key
# for the new public key beside the old copies, writing no user row: every
# ciphertext is byte-identical afterwards.  The server keeps decrypting with
# its old secret (keys made meanwhile are sealed for both), restarts with
# the new one and decrypts everything, and complete_server_key_replacement()
# deletes the old copies: the old secret opens nothing any more.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($node, $old_secret) = preloaded_node('main', conf => "pgcrypt_at_rest.worker_enabled = off\n");
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
SELECT pgcrypt_at_rest.create_keyring('other');
CREATE TABLE t AS SELECT i AS id, pgcrypt_at_rest.encrypt('row ' || i, CASE WHEN i % 3 = 0 THEN 'other' ELSE 'ring' END) AS v
  FROM generate_series(1, 30) i;
SELECT pgcrypt_at_rest.rotate_keyring('ring');
});
my $name = $node->safe_psql('postgres', 'SELECT name FROM pgcrypt_at_rest.servers WHERE this_server');
my $ciphertexts = q{SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM t};
my $before = $node->safe_psql('postgres', $ciphertexts);
my $decrypts = q{SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'row ' || id) FROM t};

# The new secret, made without the server (the command-line program).
my ($bindir) = run_command([ 'pg_config', '--bindir' ]);
chomp $bindir;
my $new_secret = PostgreSQL::Test::Utils::tempdir . '/new.key';
my ($new_public, $stderr) = run_command([ "$bindir/pgcrypt_at_rest_keygen", $new_secret ]);
chomp $new_public;
like($new_public, qr/^\\x[0-9a-f]{64}$/, 'pgcrypt_at_rest_keygen made the new secret');

is( $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.replace_server_key('$name', '$new_public')"),
	'3', 'replace_server_key() sealed the three live keys for the new public key');
is( $node->safe_psql('postgres',
		"SELECT pending_public_key = '$new_public'::bytea, pending_since IS NOT NULL FROM pgcrypt_at_rest.servers WHERE name = '$name'"),
	't|t', 'servers shows the pending public key and since when');
is($node->safe_psql('postgres', $ciphertexts), $before, 'no user row was written: every ciphertext is byte-identical');
is($node->safe_psql('postgres', $decrypts), '30', 'the server still decrypts everything with its old secret');
my $key3 = $node->safe_psql('postgres', q{SELECT pgcrypt_at_rest.rotate_keyring('other')});
is($node->safe_psql('postgres', "SELECT sealed_copies FROM pgcrypt_at_rest.keys WHERE key_id = $key3"),
	'2', 'a key made meanwhile is sealed for both of its public keys');
$node->safe_psql('postgres',
	q{INSERT INTO t SELECT i, pgcrypt_at_rest.encrypt('row ' || i, 'other') FROM generate_series(31, 33) i});
my ($ret, $out, $err) = $node->psql('postgres', "SELECT pgcrypt_at_rest.complete_server_key_replacement('$name')");
like($err, qr/server "\Q$name\E" still runs with its old secret/, 'completing before the restart is refused on the server itself');
my ($ret2, $out2, $err2) = $node->psql('postgres', "SELECT pgcrypt_at_rest.replace_server_key('$name', '$new_public')");
like($err2, qr/is already moving to a new secret/, 'a second replacement waits for the first');

# Restart with the new secret: everything decrypts.
$node->append_conf('postgresql.conf', "pgcrypt_at_rest.server_key_file = '$new_secret'");
$node->restart;
is($node->safe_psql('postgres', 'SELECT pgcrypt_at_rest.server_public_key()'), $new_public, 'the server runs with its new secret');
is($node->safe_psql('postgres', $decrypts), '33', 'with the new secret, every value decrypts, those under the key made meanwhile too');
is($node->safe_psql('postgres', "SELECT this_server FROM pgcrypt_at_rest.servers WHERE name = '$name'"),
	't', 'servers still knows it is this server');

$node->safe_psql('postgres', "SELECT pgcrypt_at_rest.complete_server_key_replacement('$name')");
is( $node->safe_psql('postgres',
		"SELECT public_key = '$new_public'::bytea, pending_public_key IS NULL, live_keys_held, live_keys_missing FROM pgcrypt_at_rest.servers WHERE name = '$name'"),
	't|t|4|0', 'completed: the new key is the server\'s, nothing pending, every live key held');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT sealed_copies::text, ',') FROM pgcrypt_at_rest.keys WHERE status <> 'destroyed'}),
	'1', 'the old copies are gone');
is($node->safe_psql('postgres', q{SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM t WHERE id <= 30}), $before,
	'still no user row written');

# The old secret opens nothing any more.
$node->append_conf('postgresql.conf', "pgcrypt_at_rest.server_key_file = '$old_secret'");
$node->restart;
($ret, $out, $err) = $node->psql('postgres', $decrypts);
like($err, qr/this server holds no copy of key \d+/, 'with the old secret, no key opens');

$node->stop;
done_testing();
