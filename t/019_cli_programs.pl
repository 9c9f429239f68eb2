# The command-line programs pgcrypt_at_rest_keygen and pgcrypt_at_rest_pubkey,
# as installed in the bindir of the PostgreSQL under test: keygen writes a
# 0600 secret and prints its public key, refuses an existing file, a path in
# a data directory and a directory others can write to, and leaves no file
# behind when it fails; pubkey refuses what the server refuses and prints
# the same key; a server started with the file reports that key.  No byte of
# any secret may reach their output or the server log.

use strict;
use warnings;

use Fcntl qw(S_IMODE);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

my $keydir = PostgreSQL::Test::Utils::tempdir;

# The bindir of the PostgreSQL under test (the pg_config on PATH, as for the
# nodes), where make install puts them.
my ($bindir, $pg_config_err) = run_command([ 'pg_config', '--bindir' ]);
die "pg_config --bindir failed: $pg_config_err" unless $bindir ne '';
my $keygen = "$bindir/pgcrypt_at_rest_keygen";
my $pubkey = "$bindir/pgcrypt_at_rest_pubkey";
ok(-x $keygen, "pgcrypt_at_rest_keygen is installed in $bindir");
ok(-x $pubkey, "pgcrypt_at_rest_pubkey is installed in $bindir");

# Everything the programs printed, checked for secrets at the end.
my $all_output = '';

# Runs a command; returns (exit code, stdout, stderr).
sub run_program
{
	my @cmd = @_;
	my ($stdout, $stderr) = ('', '');
	IPC::Run::run(\@cmd, '<', \undef, '>', \$stdout, '2>', \$stderr);
	$all_output .= $stdout . $stderr;
	return ($? >> 8, $stdout, $stderr);
}

sub file_mode
{
	my ($path) = @_;
	my @st = stat($path) or die "could not stat \"$path\": $!";
	return sprintf('%04o', S_IMODE($st[2]));
}

sub write_file_with_mode
{
	my ($path, $content, $mode) = @_;
	open(my $fh, '>:raw', $path) or die "could not write \"$path\": $!";
	print $fh $content;
	close $fh or die "could not close \"$path\": $!";
	chmod($mode, $path) or die "could not chmod \"$path\": $!";
	return;
}

##############################################################################
# Options, like PostgreSQL's programs.
##############################################################################

for my $program ($keygen, $pubkey)
{
	program_help_ok($program);
	program_version_ok($program);
	program_options_handling_ok($program);

	my ($ret, $stdout, $stderr) = run_program($program, '--help');
	is($ret, 0, "$program --help exits 0");
	like($stdout, qr/^Usage:\n  pgcrypt_at_rest_\w+ \[OPTION\]\.\.\. FILE$/m,
		"$program --help shows the usage");

	($ret, $stdout, $stderr) = run_program($program, '--version');
	like($stdout, qr/^pgcrypt_at_rest_\w+ \(pgcrypt_at_rest\) \d+\.\d+\n$/,
		"$program --version names the program and the version");

	($ret, $stdout, $stderr) = run_program($program);
	is($ret, 1, "$program without FILE exits 1");
	like($stderr, qr/^pgcrypt_at_rest_\w+: error: no secret file specified$/m,
		"$program without FILE says so");

	($ret, $stdout, $stderr) = run_program($program, 'a', 'b');
	is($ret, 1, "$program with two files exits 1");
	like($stderr, qr/error: too many command-line arguments \(first is "b"\)/,
		"$program with two files says so");
}

##############################################################################
# keygen writes a new secret.
##############################################################################

# Even with no umask at all, the file is 0600.
my $old_umask = umask(0);
my $keyfile = "$keydir/server.key";
my ($ret, $stdout, $stderr) = run_program($keygen, $keyfile);
umask($old_umask);
is($ret, 0, 'keygen exits 0');
like($stdout, qr/^\\x[0-9a-f]{64}\n$/,
	'keygen prints \\x and 64 hex digits, alone on one line');
(my $public_key = $stdout) =~ s/^\\x|\n$//g;
like($stderr, qr/^pgcrypt_at_rest_keygen: wrote a new server secret to "\Q$keyfile\E"/m,
	'keygen says where it wrote the secret, on stderr');
is(file_mode($keyfile), '0600', 'the secret file is mode 0600 (umask 0)');
my $secret_text = slurp_file($keyfile);
like($secret_text, qr/^[0-9a-f]{64}\n$/,
	'the secret file is 64 lower-case hex characters and a newline');
my @secrets = ($secret_text =~ s/\n$//r);

# A second one is another secret, another key.
my $keyfile2 = "$keydir/second.key";
($ret, $stdout, $stderr) = run_program($keygen, $keyfile2);
is($ret, 0, 'keygen of a second file exits 0');
isnt($stdout, "\\x$public_key\n", 'a second secret has another public key');
push @secrets, (slurp_file($keyfile2) =~ s/\n$//r);
isnt($secrets[1], $secrets[0], 'a second secret differs');

# A relative path, from another working directory.
{
	my $relative_dir = "$keydir/relative";
	mkdir($relative_dir, 0700) or die "could not mkdir \"$relative_dir\": $!";
	my ($rstdout, $rstderr) = ('', '');
	my $ok = IPC::Run::run([ $keygen, 'rel.key' ],
		init => sub { chdir($relative_dir) or die "chdir: $!"; },
		'<', \undef, '>', \$rstdout, '2>', \$rstderr);
	$all_output .= $rstdout . $rstderr;
	ok($ok, 'keygen with a relative path exits 0');
	like($rstderr, qr/server_key_file = '\Q$relative_dir\E\/rel\.key'/,
		'keygen gives the absolute path to set');
	push @secrets, (slurp_file("$relative_dir/rel.key") =~ s/\n$//r);
}

##############################################################################
# keygen refuses.
##############################################################################

# An existing file is never overwritten.
($ret, $stdout, $stderr) = run_program($keygen, $keyfile);
is($ret, 1, 'keygen of an existing file exits 1');
is($stdout, '', 'keygen of an existing file prints no key');
like(
	$stderr,
	qr/^pgcrypt_at_rest_keygen: error: file "\Q$keyfile\E" already exists$/m,
	'keygen of an existing file says it exists');
is(slurp_file($keyfile), $secret_text, 'the existing file is unchanged');
is(file_mode($keyfile), '0600', 'the existing file keeps its mode');

# Not even through a symbolic link, dangling or not.
symlink("$keydir/nowhere.key", "$keydir/dangling.key")
  or die "could not symlink: $!";
($ret, $stdout, $stderr) = run_program($keygen, "$keydir/dangling.key");
is($ret, 1, 'keygen of a dangling symbolic link exits 1');
ok(!-e "$keydir/nowhere.key", 'keygen did not follow the symbolic link');

# A directory that does not exist.
($ret, $stdout, $stderr) = run_program($keygen, "$keydir/no/such/dir.key");
is($ret, 1, 'keygen into a missing directory exits 1');
like($stderr, qr/error: could not access directory "\Q$keydir\E\/no\/such": No such file or directory/,
	'keygen into a missing directory says so');

# A directory others can write to.
my $open_dir = "$keydir/open";
mkdir($open_dir) or die "could not mkdir \"$open_dir\": $!";
chmod(0777, $open_dir) or die "could not chmod \"$open_dir\": $!";
($ret, $stdout, $stderr) = run_program($keygen, "$open_dir/x.key");
is($ret, 1, 'keygen into a directory others can write to exits 1');
like($stderr, qr/error: directory "\Q$open_dir\E" is writable by group or others/,
	'keygen into a directory others can write to says so');
ok(!-e "$open_dir/x.key", 'no file in a directory others can write to');

# A node, with the first secret; not started yet.
my ($node) = preloaded_node('cli', keyfile => $keyfile);
my $datadir = $node->data_dir;

# Inside a data directory, at its top or deeper.
for my $inside ("$datadir/server.key", "$datadir/global/server.key",
	"$datadir/base/1/server.key")
{
	($ret, $stdout, $stderr) = run_program($keygen, $inside);
	is($ret, 1, "keygen of $inside exits 1");
	is($stdout, '', "keygen of $inside prints no key");
	like(
		$stderr,
		qr/error: "\Q$inside\E" is inside the PostgreSQL data directory "\Q$datadir\E"/,
		"keygen of $inside names the data directory");
	ok(!-e $inside, "keygen of $inside wrote nothing");
}

# A failure once the file exists removes it: here stdout is closed.
{
	my $unprinted = "$keydir/unprinted.key";
	my ($sout, $serr) = ('', '');
	IPC::Run::run([ 'sh', '-c', 'exec "$0" "$1" >&-', $keygen, $unprinted ],
		'<', \undef, '>', \$sout, '2>', \$serr);
	$all_output .= $sout . $serr;
	is($? >> 8, 1, 'keygen with stdout closed exits 1');
	like($serr, qr/error: could not write the public key to standard output/,
		'keygen with stdout closed says so');
	ok(!-e $unprinted, 'keygen with stdout closed removed the file');
}

##############################################################################
# pubkey.
##############################################################################

($ret, $stdout, $stderr) = run_program($pubkey, $keyfile);
is($ret, 0, 'pubkey exits 0');
is($stdout, "\\x$public_key\n", 'pubkey prints the key keygen printed');
is($stderr, '', 'pubkey prints nothing on stderr');

# The server's format: upper case, no newline.
my $upper = "$keydir/upper.key";
write_file_with_mode($upper, uc($secrets[0]), 0600);
($ret, $stdout, $stderr) = run_program($pubkey, $upper);
is($stdout, "\\x$public_key\n",
	'pubkey reads upper-case hex without a newline to the same key');

# Refused: permissions for group or others, whatever they are.
for my $mode (0644, 0640, 0604, 0610)
{
	my $loose = sprintf("$keydir/mode%04o.key", $mode);
	write_file_with_mode($loose, "$secrets[0]\n", $mode);
	($ret, $stdout, $stderr) = run_program($pubkey, $loose);
	my $shown = sprintf('%04o', $mode);
	is($ret, 1, "pubkey of a $shown file exits 1");
	is($stdout, '', "pubkey of a $shown file prints no key");
	like(
		$stderr,
		qr/^pgcrypt_at_rest_pubkey: error: server key file "\Q$loose\E" is accessible by group or others \(mode $shown\)$/m,
		"pubkey of a $shown file says what is wrong");
}

# Refused: not the format.
my %malformed = (
	'62 hex characters' => substr($secrets[0], 0, 62) . "\n",
	'a non-hex character' => substr($secrets[0], 0, 63) . "g\n",
	'two newlines' => "$secrets[0]\n\n",
	'a space' => " $secrets[0]",
	'66 hex characters' => "$secrets[0]ab",
	'nothing' => '');
for my $case (sort keys %malformed)
{
	my $path = "$keydir/malformed.key";
	write_file_with_mode($path, $malformed{$case}, 0600);
	($ret, $stdout, $stderr) = run_program($pubkey, $path);
	is($ret, 1, "pubkey of a file with $case exits 1");
	is($stdout, '', "pubkey of a file with $case prints no key");
	like(
		$stderr,
		qr/error: server key file "\Q$path\E" is not 64 hexadecimal characters/,
		"pubkey of a file with $case says what is wrong");
	unlink $path or die "could not remove \"$path\": $!";
}

# Refused: missing, a directory, inside the data directory.
($ret, $stdout, $stderr) = run_program($pubkey, "$keydir/missing.key");
is($ret, 1, 'pubkey of a missing file exits 1');
like($stderr,
	qr/error: could not open server key file "\Q$keydir\E\/missing\.key": No such file or directory/,
	'pubkey of a missing file says so');
($ret, $stdout, $stderr) = run_program($pubkey, $keydir);
is($ret, 1, 'pubkey of a directory exits 1');
like($stderr, qr/error: server key file "\Q$keydir\E" is not a regular file/,
	'pubkey of a directory says so');
my $in_datadir = "$datadir/copied.key";
write_file_with_mode($in_datadir, "$secrets[0]\n", 0600);
($ret, $stdout, $stderr) = run_program($pubkey, $in_datadir);
is($ret, 1, 'pubkey of a file inside a data directory exits 1');
like(
	$stderr,
	qr/error: server key file "\Q$in_datadir\E" is inside the PostgreSQL data directory "\Q$datadir\E"/,
	'pubkey of a file inside a data directory says so');
unlink $in_datadir or die "could not remove \"$in_datadir\": $!";

##############################################################################
# A server started with the secret keygen wrote has the key it printed.
##############################################################################

$node->start;
ok($node->log_contains(
		qr/pgcrypt_at_rest: server secret loaded from pgcrypt_at_rest\.server_key_file/),
	'the server loads the secret keygen wrote');
$node->safe_psql('postgres', 'CREATE EXTENSION pgcrypt_at_rest');
is( $node->safe_psql(
		'postgres', "SELECT encode(pgcrypt_at_rest.server_public_key(), 'hex')"),
	$public_key,
	'server_public_key() is the key keygen and pubkey printed');
is( $node->safe_psql(
		'postgres',
		"SELECT pgcrypt_at_rest.server_public_key() = '\\x$public_key'::bytea,
		        (SELECT count(*) FROM pgcrypt_at_rest.servers
		          WHERE public_key = '\\x$public_key'::bytea)"),
	't|1',
	'the printed form is a bytea literal of the registered key');

##############################################################################
# No secret in any output, nor in the server log.
##############################################################################

$node->stop;
my $log = slurp_file($node->logfile);
my $leaks = 0;
for my $hex (@secrets)
{
	for my $text ($all_output, $log)
	{
		for my $piece ($hex, uc $hex, substr($hex, 0, 32), substr($hex, 32),
			pack('H*', $hex))
		{
			$leaks++ if index($text, $piece) >= 0;
		}
	}
}
is($leaks, 0,
	'no secret (hex, upper-case hex, half or raw) is in the programs\' output or the server log');
is(scalar(@secrets), 3, 'all secrets were checked');
ok(length($all_output) > 0, 'the programs\' output was collected');

done_testing();
