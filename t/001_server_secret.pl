# Loading of the server secret: every way it can be refused, and the ways it
# is accepted.  A refused secret must leave the server running, log a
# WARNING naming the reason, and make every function that needs keys fail
# with SQLSTATE F0000 and a hint naming the settings.  The secret itself must
# never reach the server log.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

my $keydir = PostgreSQL::Test::Utils::tempdir;

sub write_file_with_mode
{
	my ($path, $content, $mode) = @_;
	open(my $fh, '>:raw', $path) or die "could not write \"$path\": $!";
	print $fh $content;
	close $fh or die "could not close \"$path\": $!";
	chmod($mode, $path) or die "could not chmod \"$path\": $!";
	return;
}

# Every secret written anywhere in this test, raw; none may reach the log.
my @secrets;

sub new_secret_file
{
	my ($path, $mode, $newline) = @_;
	my $raw = random_bytes(32);
	push @secrets, $raw;
	write_file_with_mode($path, unpack('H*', $raw) . ($newline ? "\n" : ''),
		$mode);
	return $raw;
}

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;

# The two settings live in one included file, rewritten for every case.
my $secret_conf = $node->data_dir . '/pcar_secret.conf';
write_file_with_mode($secret_conf, '', 0600);
$node->append_conf('postgresql.conf', "include 'pcar_secret.conf'");

sub set_secret_conf
{
	my (%p) = @_;
	my $conf = '';
	for my $name ('file', 'command')
	{
		my $value = $p{$name} // '';
		$value =~ s/'/''/g;
		$conf .= "pgcrypt_at_rest.server_key_$name = '$value'\n";
	}
	write_file_with_mode($secret_conf, $conf, 0600);
	return;
}

# Restarts and returns the log offset from before the restart.
sub restart_node
{
	my $offset = -s $node->logfile;
	$node->restart;
	is($node->safe_psql('postgres', 'SELECT 1'), '1', 'server started');
	return $offset;
}

# Runs SQL in psql with verbose errors (so SQLSTATEs are shown) and
# ON_ERROR_STOP (so an error gives exit code 3); returns
# (exit code, stdout, stderr).
sub psql_verbose
{
	my ($sql) = @_;
	my ($stdout, $stderr) = ('', '');
	my $ret = $node->psql(
		'postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$stdout,
		stderr => \$stderr);
	return ($ret, $stdout, $stderr);
}

# The checks every refused secret must pass.
sub check_refused
{
	my ($case, $offset, $reason) = @_;

	ok( $node->log_contains(
			qr/WARNING:  pgcrypt_at_rest: no server secret loaded: \Q$reason\E/,
			$offset),
		"$case: WARNING with the reason is logged");
	ok(!$node->log_contains(qr/server secret loaded from/, $offset),
		"$case: no secret reported as loaded");

	my ($ret, $stdout, $stderr) =
	  psql_verbose('SELECT pgcrypt_at_rest.server_public_key();');
	is($ret, 3, "$case: server_public_key() fails");
	like(
		$stderr,
		qr/ERROR:  F0000: pgcrypt_at_rest has no server secret/,
		"$case: error has SQLSTATE F0000 and the message");
	like($stderr, qr/DETAIL:  \Q$reason\E/, "$case: DETAIL gives the reason");
	like(
		$stderr,
		qr/HINT:  .*pgcrypt_at_rest\.server_key_file/,
		"$case: HINT names pgcrypt_at_rest.server_key_file");

	# The SQLSTATE seen from inside the server, not only psql's rendering.
	my $notice = '';
	$node->psql(
		'postgres', q{
DO $$
BEGIN
	PERFORM pgcrypt_at_rest.server_public_key();
	RAISE WARNING 'result: no error';
EXCEPTION WHEN SQLSTATE 'F0000' THEN
	RAISE WARNING 'result: caught F0000';
END
$$;},
		stderr => \$notice);
	like($notice, qr/result: caught F0000/,
		"$case: the error is caught as SQLSTATE F0000");
	return;
}

##############################################################################
# Without shared_preload_libraries the extension cannot be created.
##############################################################################

$node->start;
{
	my ($ret, $stdout, $stderr) =
	  psql_verbose('CREATE EXTENSION pgcrypt_at_rest;');
	is($ret, 3, 'CREATE EXTENSION fails without shared_preload_libraries');
	like(
		$stderr,
		qr/pgcrypt_at_rest must be loaded via shared_preload_libraries/,
		'the error says it must be loaded via shared_preload_libraries');
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypt_at_rest'"
		),
		'0',
		'the failed CREATE EXTENSION left nothing behind');
}

$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pgcrypt_at_rest'");

##############################################################################
# Neither setting: the extension is created but registers no server.
##############################################################################

my $offset = restart_node();
{
	my ($ret, $stdout, $stderr) =
	  psql_verbose('CREATE EXTENSION pgcrypt_at_rest;');
	is($ret, 0, 'CREATE EXTENSION succeeds without a secret');
	like(
		$stderr,
		qr/WARNING:  01000: pgcrypt_at_rest has no server secret, so this server was not registered/,
		'CREATE EXTENSION warns that the server was not registered');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM pgcrypt_at_rest.servers'),
		'0', 'no server is registered without a secret');

	($ret, $stdout, $stderr) =
	  psql_verbose("SELECT pgcrypt_at_rest.create_keyring('ring');");
	like(
		$stderr,
		qr/ERROR:  F0000: pgcrypt_at_rest has no server secret/,
		'create_keyring() fails with F0000 without a secret');
}
check_refused('neither setting', $offset,
	'neither pgcrypt_at_rest.server_key_file nor pgcrypt_at_rest.server_key_command is set'
);

##############################################################################
# Refused secrets.
##############################################################################

# A missing file.
my $missing = "$keydir/missing.key";
set_secret_conf(file => $missing);
$offset = restart_node();
check_refused('missing file', $offset,
	"could not open server key file \"$missing\": No such file or directory");

# A valid secret in a file that group members can read.
my $group_readable = "$keydir/group_readable.key";
new_secret_file($group_readable, 0640, 1);
set_secret_conf(file => $group_readable);
$offset = restart_node();
check_refused('mode 0640', $offset,
	"server key file \"$group_readable\" is accessible by group or others");

# A valid secret, mode 0600, but inside the data directory.
my $inside = $node->data_dir . '/server.key';
new_secret_file($inside, 0600, 1);
set_secret_conf(file => $inside);
$offset = restart_node();
check_refused('file inside the data directory', $offset,
	"server key file \"$inside\" is inside the data directory");
unlink $inside or die "could not remove \"$inside\": $!";

# 62 hex characters.
my $short = "$keydir/short.key";
write_file_with_mode($short, substr(unpack('H*', random_bytes(32)), 0, 62) . "\n",
	0600);
set_secret_conf(file => $short);
$offset = restart_node();
check_refused('62 hex characters', $offset,
	'the server secret from pgcrypt_at_rest.server_key_file is not 64 hexadecimal characters'
);

# 64 characters, not all hex.
my $nonhex = "$keydir/nonhex.key";
write_file_with_mode($nonhex,
	substr(unpack('H*', random_bytes(32)), 0, 63) . "g\n", 0600);
set_secret_conf(file => $nonhex);
$offset = restart_node();
check_refused('non-hex content', $offset,
	'the server secret from pgcrypt_at_rest.server_key_file is not 64 hexadecimal characters'
);

# A command that fails, even after printing a valid secret.
my $good = "$keydir/server.key";
new_secret_file($good, 0600, 0);
set_secret_conf(command => "cat '$good'; exit 3");
$offset = restart_node();
check_refused('failing command', $offset,
	'pgcrypt_at_rest.server_key_command failed: child process exited with exit code 3');

set_secret_conf(command => 'exit 3');
$offset = restart_node();
check_refused('command exit 3', $offset,
	'pgcrypt_at_rest.server_key_command failed: child process exited with exit code 3');

# Both settings, each valid on its own.
set_secret_conf(file => $good, command => "cat '$good'");
$offset = restart_node();
check_refused('both settings', $offset,
	'both pgcrypt_at_rest.server_key_file and pgcrypt_at_rest.server_key_command are set'
);

##############################################################################
# A good key file.
##############################################################################

set_secret_conf(file => $good);
$offset = restart_node();
ok( $node->log_contains(
		qr/pgcrypt_at_rest: server secret loaded from pgcrypt_at_rest\.server_key_file/,
		$offset),
	'good file: the secret is reported as loaded from the file');
ok(!$node->log_contains(qr/no server secret loaded/, $offset),
	'good file: no WARNING');

my $public_key = $node->safe_psql('postgres',
	"SELECT encode(pgcrypt_at_rest.server_public_key(), 'hex')");
like($public_key, qr/^[0-9a-f]{64}$/, 'server_public_key() is 32 bytes');

my $key_id =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('ring')");
like($key_id, qr/^[1-9][0-9]*$/, 'create_keyring() returns a key id');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*), bool_and(public_key = pgcrypt_at_rest.server_public_key())
		   FROM pgcrypt_at_rest.servers"),
	'1|t',
	'the first create_keyring() registered this server');

$node->safe_psql(
	'postgres', q{
CREATE TABLE secrets (id int PRIMARY KEY, v pgcrypt_at_rest.encrypted,
                      b pgcrypt_at_rest.encrypted);
INSERT INTO secrets
	SELECT i, pgcrypt_at_rest.encrypt('value ' || i, 'ring'),
	       pgcrypt_at_rest.encrypt(convert_to('bytes ' || i, 'UTF8'), 'ring',
	                               convert_to('row ' || i, 'UTF8'))
	  FROM generate_series(1, 100) i;
});

my $roundtrip_sql = q{
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = 'value ' || id),
       count(*) FILTER (WHERE pgcrypt_at_rest.decrypt(b, convert_to('row ' || id, 'UTF8'))
                              = convert_to('bytes ' || id, 'UTF8')),
       count(*) FILTER (WHERE v::text LIKE 'enc:%' AND v::text NOT LIKE '%value%'),
       count(DISTINCT pgcrypt_at_rest.key_id(v))
  FROM secrets};
is($node->safe_psql('postgres', $roundtrip_sql),
	"100|100|100|1", 'good file: encrypt/decrypt round trip');
is( $node->safe_psql(
		'postgres', "SELECT pgcrypt_at_rest.key_id(v) FROM secrets LIMIT 1"),
	$key_id,
	'values carry the key id create_keyring() returned');

# Same file again: same server, old values still decrypt.
$offset = restart_node();
is( $node->safe_psql(
		'postgres', "SELECT encode(pgcrypt_at_rest.server_public_key(), 'hex')"),
	$public_key,
	'restart with the same file: same public key');
is($node->safe_psql('postgres', $roundtrip_sql),
	"100|100|100|1", 'restart with the same file: old values still decrypt');

# A different (valid) secret is a different server: it cannot open the keys.
my $other = "$keydir/other.key";
new_secret_file($other, 0600, 1);
set_secret_conf(file => $other);
$offset = restart_node();
ok( $node->log_contains(
		qr/pgcrypt_at_rest: server secret loaded from pgcrypt_at_rest\.server_key_file/,
		$offset),
	'other secret (with trailing newline) is loaded');
isnt(
	$node->safe_psql(
		'postgres', "SELECT encode(pgcrypt_at_rest.server_public_key(), 'hex')"),
	$public_key,
	'another secret gives another public key');
{
	my ($ret, $stdout, $stderr) =
	  psql_verbose('SELECT pgcrypt_at_rest.decrypt_text(v) FROM secrets;');
	like(
		$stderr,
		qr/this server holds no copy of key $key_id of keyring "ring"/,
		'another secret cannot decrypt the old values');
	($ret, $stdout, $stderr) =
	  psql_verbose("SELECT pgcrypt_at_rest.create_keyring('ring2');");
	like(
		$stderr,
		qr/this server is not registered in pgcrypt_at_rest\.servers/,
		'another secret cannot create keys for the registered servers');
}

# A good command printing the same secret is the same server.
set_secret_conf(command => "cat '$good'");
$offset = restart_node();
ok( $node->log_contains(
		qr/pgcrypt_at_rest: server secret loaded from pgcrypt_at_rest\.server_key_command/,
		$offset),
	'good command: the secret is reported as loaded from the command');
ok(!$node->log_contains(qr/no server secret loaded/, $offset),
	'good command: no WARNING');
is( $node->safe_psql(
		'postgres', "SELECT encode(pgcrypt_at_rest.server_public_key(), 'hex')"),
	$public_key,
	'good command: same public key as the file');
is($node->safe_psql('postgres', $roundtrip_sql),
	"100|100|100|1", 'good command: old values decrypt');
is( $node->safe_psql(
		'postgres',
		"SELECT pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('new', 'ring'))"),
	'new',
	'good command: new values round-trip');

##############################################################################
# Keys exist, but the secret is gone: encrypt and decrypt fail with F0000.
##############################################################################

set_secret_conf(file => $missing);
$offset = restart_node();
check_refused('missing file, keys exist', $offset,
	"could not open server key file \"$missing\": No such file or directory");
for my $sql ("SELECT pgcrypt_at_rest.encrypt('x', 'ring');",
	'SELECT pgcrypt_at_rest.decrypt_text(v) FROM secrets;',
	"SELECT pgcrypt_at_rest.rotate_keyring('ring');")
{
	my ($ret, $stdout, $stderr) = psql_verbose($sql);
	like(
		$stderr,
		qr/ERROR:  F0000: pgcrypt_at_rest has no server secret/,
		"no secret: F0000 from $sql");
}

##############################################################################
# No secret ever reached the server log.
##############################################################################

$node->stop;
my $log = slurp_file($node->logfile);
ok(length($log) > 0, 'the server log is not empty');
my $leaks = 0;
for my $raw (@secrets)
{
	my $hex = unpack('H*', $raw);
	$leaks++ if index($log, $hex) >= 0;
	$leaks++ if index($log, uc $hex) >= 0;
	$leaks++ if index($log, $raw) >= 0;
	# also any half of the secret, in case it was logged in pieces
	$leaks++ if index($log, substr($hex, 0, 32)) >= 0;
	$leaks++ if index($log, substr($hex, 32)) >= 0;
}
is($leaks, 0, 'no secret (hex, upper-case hex, raw or half) is in the server log');
is(scalar(@secrets), 4, 'all secrets were checked');

done_testing();
