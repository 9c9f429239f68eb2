# pgcrypt_at_rest.server_key_command and what it may leave behind: a
# background child holding its stdout must not hold up the start, a command
# that hangs is killed with everything it started once
# pgcrypt_at_rest.server_key_command_timeout has passed, and the command
# sees no descriptor of the postmaster but stdin, stdout and stderr.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

my $dir = PostgreSQL::Test::Utils::tempdir;
my $keyfile = write_secret_file("$dir/server.key");
my $key_hex = slurp_file($keyfile);
chomp $key_hex;

# The commands' sleeps carry this test's pid in their interval, so that
# pgrep finds them and nothing else.
my $marker = "$$";

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
my $secret_conf = $node->data_dir . '/pcar_secret.conf';
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pgcrypt_at_rest'\ninclude 'pcar_secret.conf'\n");

# Pids of the processes whose command line matches $pattern.
sub pids_matching
{
	my ($pattern) = @_;
	open(my $ph, '-|', 'pgrep', '-f', '--', $pattern)
	  or die "could not run pgrep: $!";
	my @pids = map { chomp; $_ } <$ph>;
	close $ph;
	return @pids;
}

# Restarts the node with $command (and $timeout, if given) as the secret
# settings.  Returns whether the start succeeded and the log offset from
# before it.
sub start_with_command
{
	my ($command, $timeout) = @_;
	(my $quoted = $command) =~ s/'/''/g;
	open(my $fh, '>', $secret_conf) or die "could not write \"$secret_conf\": $!";
	print $fh "pgcrypt_at_rest.server_key_command = '$quoted'\n";
	print $fh "pgcrypt_at_rest.server_key_command_timeout = $timeout\n"
	  if defined $timeout;
	close $fh or die "could not close \"$secret_conf\": $!";

	$node->stop if defined $node->{_pid};
	my $offset = -s $node->logfile // 0;
	my $started = $node->start(fail_ok => 1);
	return ($started, $offset);
}

##############################################################################
# A background child holding the pipe: the start goes on once sh has exited.
##############################################################################

# The timeout is well below the child's life: waiting for the end of the
# pipe's output would time out and refuse the secret.
my $bg_sleep = "sleep 120.${marker}1";
my ($started, $offset) =
  start_with_command("$bg_sleep & cat '$keyfile'", 20);
ok($started, 'background child: the server starts');
ok( $node->log_contains(
		qr/pgcrypt_at_rest: server secret loaded from pgcrypt_at_rest\.server_key_command/,
		$offset),
	'background child: the secret is loaded from the command');
$node->safe_psql('postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
});
is( $node->safe_psql(
		'postgres',
		"SELECT pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('round trip', 'ring'))"
	),
	'round trip',
	'background child: encrypt/decrypt round trip');

# A daemonizing agent is left alone once sh has exited successfully.
my @bg = pids_matching(quotemeta($bg_sleep));
is(scalar(@bg), 1, 'background child: the child is left running');
kill 'KILL', @bg;

##############################################################################
# A hanging command: killed at the timeout with its children, and refused.
##############################################################################

my $hang_reason =
  'pgcrypt_at_rest.server_key_command timed out after 2s (pgcrypt_at_rest.server_key_command_timeout) and was killed with its process group';

# Waits up to 10 s for no process to match $pattern; returns whether none does.
sub none_left
{
	my ($pattern) = @_;
	for (1 .. 50)
	{
		return 1 if !pids_matching($pattern);
		usleep(200_000);
	}
	diag('still running: ' . join(' ', pids_matching($pattern)));
	return 0;
}

sub check_timed_out
{
	my ($case, $offset, $pattern) = @_;

	ok( $node->log_contains(
			qr/WARNING:  pgcrypt_at_rest: no server secret loaded: \Q$hang_reason\E/,
			$offset),
		"$case: the timeout is logged");
	ok(!$node->log_contains(qr/server secret loaded from/, $offset),
		"$case: no secret reported as loaded");
	my ($stdout, $stderr) = ('', '');
	$node->psql(
		'postgres', "SELECT pgcrypt_at_rest.encrypt('x', 'ring')",
		stdout => \$stdout,
		stderr => \$stderr);
	like($stderr, qr/ERROR:  pgcrypt_at_rest has no server secret/,
		"$case: encrypt() fails");
	like($stderr, qr/DETAIL:  \Q$hang_reason\E/,
		"$case: the error's detail gives the timeout");
	ok(none_left($pattern), "$case: no process of the command is left");
	return;
}

# sh waits for a sleep, with another sleep in the background.
($started, $offset) = start_with_command(
	"sleep 600.${marker}2 & sleep 600.${marker}3; cat '$keyfile'", 2);
ok($started, 'hanging command: the server starts');
check_timed_out('hanging command', $offset, quotemeta("600.${marker}"));

# sh prints the secret and closes its stdout, but does not exit.
($started, $offset) = start_with_command(
	"cat '$keyfile'; exec >&-; sleep 600.${marker}4", 2);
ok($started, 'command closing its stdout: the server starts');
check_timed_out('command closing its stdout', $offset,
	quotemeta("600.${marker}4"));

##############################################################################
# The command inherits stdin (/dev/null), stdout (the pipe) and stderr only.
##############################################################################

# ls lists the descriptors of sh, which runs the command, so that ls's own
# are not in the list; from a subshell, as dash opens a redirection, and
# keeps a copy of what it replaces, before it forks.
my $fd_list = "$dir/fds.txt";
($started, $offset) =
  start_with_command('(ls -l /proc/$$/fd > ' . "'$fd_list'); cat '$keyfile'");
ok($started, 'descriptors: the server starts');
ok( $node->log_contains(
		qr/pgcrypt_at_rest: server secret loaded from pgcrypt_at_rest\.server_key_command/,
		$offset),
	'descriptors: the secret is loaded');
my %fds = map { /\s(\d+) -> (.*)$/ ? ($1 => $2) : () }
  split /\n/, slurp_file($fd_list);
is(join(' ', sort { $a <=> $b } keys %fds),
	'0 1 2', 'descriptors: the command has 0, 1 and 2 only')
  or diag(slurp_file($fd_list));
is($fds{0}, '/dev/null', 'descriptors: stdin is /dev/null');
like($fds{1} // '', qr/^pipe:/, 'descriptors: stdout is a pipe');

# The default is below pg_ctl's default wait of 60 s.
is( $node->safe_psql(
		'postgres', 'SHOW pgcrypt_at_rest.server_key_command_timeout'),
	'30s',
	'server_key_command_timeout defaults to 30 s');

##############################################################################
# The secret never reached the log.
##############################################################################

$node->stop;
my $log = slurp_file($node->logfile);
ok(index($log, $key_hex) < 0 && index($log, uc $key_hex) < 0,
	'the secret is not in the server log');

done_testing();
