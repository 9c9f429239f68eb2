# An offline escrow key is a server like any other: a key pair made with
# pgcrypt_at_rest_keygen on a machine that never runs PostgreSQL, its public
# key added with add_server(), its secret kept offline.  When every running
# server's secret is lost, a fresh server started with the escrow secret,
# onto which a dump is restored, decrypts everything.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($source, $source_secret) = preloaded_node('source', conf => "pgcrypt_at_rest.worker_enabled = off\n");
$source->start;
$source->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
CREATE TABLE t AS SELECT i AS id, pgcrypt_at_rest.encrypt('row ' || i, 'ring', int8send(i)) AS v
  FROM generate_series(1, 20) i;
SELECT pgcrypt_at_rest.rotate_keyring('ring');
INSERT INTO t SELECT i, pgcrypt_at_rest.encrypt('row ' || i, 'ring', int8send(i)) FROM generate_series(21, 25) i;
});

# The escrow key pair, made offline.
my ($bindir) = run_command([ 'pg_config', '--bindir' ]);
chomp $bindir;
my $escrow_secret = PostgreSQL::Test::Utils::tempdir . '/escrow.key';
my ($escrow_public) = run_command([ "$bindir/pgcrypt_at_rest_keygen", $escrow_secret ]);
chomp $escrow_public;
is($source->safe_psql('postgres', "SELECT pgcrypt_at_rest.add_server('escrow', '$escrow_public')"),
	'2', 'the escrow key holds a copy of both live keys');

my $dump = PostgreSQL::Test::Utils::tempdir . '/backup.dump';
$source->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $source->connstr('postgres') ], 'a dump');

# Every running server's secret is lost.
$source->stop;
unlink $source_secret or die "could not remove the source's secret: $!";

my ($recovery) = preloaded_node('recovery', keyfile => $escrow_secret,
	conf => "pgcrypt_at_rest.worker_enabled = off\n");
$recovery->start;
$recovery->safe_psql('postgres', 'CREATE DATABASE restored');
$recovery->command_ok([ 'pg_restore', '--exit-on-error', '-d', $recovery->connstr('restored'), $dump ],
	'restored onto a fresh server started with the escrow secret');
is( $recovery->safe_psql('restored',
		q{SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v, int8send(id)) = 'row ' || id) FROM t}),
	'25', 'everything decrypts with the escrow secret');
is($recovery->safe_psql('restored', q{SELECT count(*) FROM pgcrypt_at_rest.servers WHERE this_server}),
	'1', 'the recovery server is one of the servers');

$recovery->stop;
done_testing();
