# A dump restored on another server, one with its own secret.  Onto a
# server added (add_server) before the dump: every row decrypts.  Onto a
# server never added: every row is restored, decrypting says this server
# holds no copy (and the hint names the add_server() call to run on the
# source), and the runbook's way out works: add its public key on the
# source and dump again, and everything decrypts.

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

# The way out: add it on the source, dump again.
$source->safe_psql('postgres', "SELECT pgcrypt_at_rest.add_server('unknown', '$unknown_key')");
my $dump2 = PostgreSQL::Test::Utils::tempdir . '/source2.dump';
$source->command_ok([ 'pg_dump', '-Fc', '-f', $dump2, '-d', $source->connstr('postgres') ], 'pg_dump again');
restore($node{unknown}, $dump2);
is($node{unknown}->safe_psql('copy', $decrypts), '30', 'after add_server() on the source and a new dump, every row decrypts');

$_->stop for values %node;
done_testing();
