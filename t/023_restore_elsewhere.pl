# A dump restored on another server, one with its own secret.  Onto a
# server added (add_server) before the dump: every row decrypts.  Onto a
# server never added: every row is restored, decrypting says this server
# holds no copy (and the hint names the add_server() call to run on the
# source), and the runbook's way out works: add its public key on the
# source and dump again, and everything decrypts.  A table's data loaded
# into another database names a key that does not exist there; a dump
# taken at version 1.3 restores into the current version.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my %node;
for my $name ('source', 'added', 'unknown')
{
	($node{$name}) = preloaded_node($name, conf => "pgcrypt_at_rest.worker_enabled = off\n");
	$node{$name}->start;
}
my $source = $node{source};
$source->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
CREATE TABLE t AS SELECT i AS id, pgcrypt_at_rest.encrypt('row ' || i, 'ring') AS v
  FROM generate_series(1, 25) i;
SELECT pgcrypt_at_rest.rotate_keyring('ring');
INSERT INTO t SELECT i, pgcrypt_at_rest.encrypt('row ' || i, 'ring') FROM generate_series(26, 30) i;
});

# A server's public key, known before it holds anything: its own function
# works before the extension has any key (CREATE EXTENSION on an empty database).
sub public_key
{
	my ($node) = @_;
	$node->safe_psql('postgres', 'CREATE DATABASE probe');
	my $key = $node->safe_psql('probe', 'CREATE EXTENSION pgcrypt_at_rest; SELECT pgcrypt_at_rest.server_public_key()');
	$node->safe_psql('postgres', 'DROP DATABASE probe');
	return $key;
}

my $added_key = public_key($node{added});
$source->safe_psql('postgres', "SELECT pgcrypt_at_rest.add_server('added', '$added_key')");

my $dump = PostgreSQL::Test::Utils::tempdir . '/source.dump';
$source->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $source->connstr('postgres') ], 'pg_dump of the source');

sub restore
{
	my ($node, $file) = @_;
	$node->safe_psql('postgres', 'DROP DATABASE IF EXISTS copy');
	$node->safe_psql('postgres', 'CREATE DATABASE copy');
	$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('copy'), $file ],
		'pg_restore onto ' . $node->name);
}

my $decrypts = q{SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'row ' || id) FROM t};

restore($node{added}, $dump);
is($node{added}->safe_psql('copy', $decrypts), '30', 'restored onto a server added before the dump, every row decrypts');

restore($node{unknown}, $dump);
is($node{unknown}->safe_psql('copy', 'SELECT count(*) FROM t'), '30', 'restored onto a server never added, every row is there');
my ($ret, $stdout, $stderr) = $node{unknown}->psql('copy', $decrypts);
like($stderr, qr/this server holds no copy of key \d+ of keyring "ring"/, 'decrypting there says this server holds no copy');
my $unknown_key = $node{unknown}->safe_psql('copy', 'SELECT pgcrypt_at_rest.server_public_key()');
like($stderr, qr/add_server\('a name for this server', '\Q$unknown_key\E'\)/,
	'and the hint is the add_server() call, with this server\'s public key');

# encrypt() fails there too, until a key this server can open is active,
# and says so: rotating here cannot help, as this server is not registered.
($ret, $stdout, $stderr) = $node{unknown}->psql('copy', q{SELECT pgcrypt_at_rest.encrypt('new', 'ring')});
like($stderr, qr/this server holds no copy of key \d+ of keyring "ring"/, 'encrypt() fails there too');
like($stderr, qr/DETAIL:  encrypt\(\) uses the keyring's active key/, 'and says it needs the active key');
like($stderr, qr/HINT:  .*add_server\('a name for this server', '\Q$unknown_key\E'\); if this database was restored from a dump, then restore its key tables from a new dump/,
	'and the hint is add_server() on the source, then key tables from a new dump');

# The way out: add it on the source, dump again.
$source->safe_psql('postgres', "SELECT pgcrypt_at_rest.add_server('unknown', '$unknown_key')");
my $dump2 = PostgreSQL::Test::Utils::tempdir . '/source2.dump';
$source->command_ok([ 'pg_dump', '-Fc', '-f', $dump2, '-d', $source->connstr('postgres') ], 'pg_dump again');
restore($node{unknown}, $dump2);
is($node{unknown}->safe_psql('copy', $decrypts), '30', 'after add_server() on the source and a new dump, every row decrypts');

# A value that travels without its keys (one table's data, into another
# database that has keys of its own) names a key that does not exist there.
$node{added}->safe_psql('postgres', 'CREATE DATABASE other');
$node{added}->safe_psql(
	'other', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
SELECT pgcrypt_at_rest.rotate_keyring('ring');
CREATE TABLE t (id int, v pgcrypt_at_rest.encrypted);
});
my $table_dump = PostgreSQL::Test::Utils::tempdir . '/t.sql';
$source->command_ok([ 'pg_dump', '--data-only', '-t', 't', '-f', $table_dump, '-d', $source->connstr('postgres') ],
	'pg_dump of one table\'s data');
$node{added}->command_ok([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-f', $table_dump, '-d', $node{added}->connstr('other') ],
	'loaded into another database');
is($node{added}->safe_psql('other', 'SELECT count(*) FROM t'), '30', 'the rows are there');
($ret, $stdout, $stderr) = $node{added}->psql('other', $decrypts);
like($stderr, qr/ERROR:  key \d+ does not exist in this database/,
	'decrypting names a key that does not exist there, not a value altered');
like($stderr, qr/HINT:  The value was probably copied from another database or cluster/,
	'and the hint says where the value came from');

# A dump taken at version 1.3, whose keys have serial ids, restores into
# 1.4: the ids are kept, the generations follow them, new keys get random ids.
$source->safe_psql('postgres', 'CREATE DATABASE old_version');
$source->safe_psql(
	'old_version', q{
CREATE EXTENSION pgcrypt_at_rest VERSION '1.3';
SELECT pgcrypt_at_rest.create_keyring('ring');
CREATE TABLE t AS SELECT i AS id, pgcrypt_at_rest.encrypt('row ' || i, 'ring') AS v FROM generate_series(1, 10) i;
SELECT pgcrypt_at_rest.rotate_keyring('ring');
SELECT pgcrypt_at_rest.create_keyring('second');
SELECT pgcrypt_at_rest.rotate_keyring('ring');
-- the first key's row is written again (as the worker does, persisting
-- counts): its tuple now lies after the others, and COPY reads it last
UPDATE pgcrypt_at_rest.data_key SET encryptions = encryptions + 1
 WHERE id = (SELECT min(id) FROM pgcrypt_at_rest.data_key);
});
my $old_keys = q{SELECT string_agg(key_id || ':' || keyring || ':' || status, ',' ORDER BY key_id) FROM pgcrypt_at_rest.keys};
my $old_keys_before = $source->safe_psql('old_version', $old_keys);
my $old_dump = PostgreSQL::Test::Utils::tempdir . '/old_version.dump';
$source->command_ok([ 'pg_dump', '-Fc', '-f', $old_dump, '-d', $source->connstr('old_version') ], 'pg_dump at 1.3');
$source->safe_psql('postgres', 'CREATE DATABASE old_restored');
$source->command_ok([ 'pg_restore', '--exit-on-error', '-d', $source->connstr('old_restored'), $old_dump ],
	'the 1.3 dump restores');
is($source->safe_psql('old_restored', q{SELECT extversion FROM pg_extension WHERE extname = 'pgcrypt_at_rest'}),
	'1.4', 'into the current version');
is($source->safe_psql('old_restored', $old_keys), $old_keys_before, 'every key kept its id');
is($source->safe_psql('old_restored', $decrypts), '10', 'every row decrypts');
is( $source->safe_psql(
		'old_restored',
		q{SELECT string_agg(keyring || ':' || generation, ',' ORDER BY key_id) FROM pgcrypt_at_rest.keys}),
	'ring:1,ring:2,second:1,ring:3',
	'generations follow the order the keys were made in, not the order COPY loaded them');
my $new_key = $source->safe_psql('old_restored', q{SELECT pgcrypt_at_rest.rotate_keyring('ring')});
cmp_ok($new_key, '>=', 2**24, 'a key made after the restore has a random id');
is($source->safe_psql('old_restored', "SELECT generation FROM pgcrypt_at_rest.keys WHERE key_id = $new_key"),
	'4', 'and is the newest generation');

$_->stop for values %node;
done_testing();
