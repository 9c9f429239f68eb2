# Helpers shared by the TAP tests: a server secret file, a node that preloads
# pgcrypt_at_rest with that secret, and polling until a query returns what is
# expected.
#
# The tests load it with
#
#   use FindBin;
#   use lib $FindBin::RealBin;
#   use PcarTestUtils;
#
# so it is found whatever directory prove runs from.

package PcarTestUtils;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More ();
use Time::HiRes qw(usleep);

our @EXPORT = qw(random_bytes write_secret_file preloaded_node wait_for);

# $n bytes from /dev/urandom.
sub random_bytes
{
	my ($n) = @_;
	open(my $rnd, '<:raw', '/dev/urandom')
	  or die "could not open /dev/urandom: $!";
	my $got = read($rnd, my $bytes, $n);
	close $rnd;
	die "short read from /dev/urandom" unless defined $got && $got == $n;
	return $bytes;
}

# Writes a fresh random server secret to $path: 32 bytes from /dev/urandom as
# 64 lower-case hexadecimal characters and a newline, mode 0600.  Returns
# $path.
sub write_secret_file
{
	my ($path) = @_;
	my $secret = random_bytes(32);
	open(my $fh, '>', $path) or die "could not write \"$path\": $!";
	print $fh unpack('H*', $secret), "\n";
	close $fh or die "could not close \"$path\": $!";
	chmod(0600, $path) or die "could not chmod \"$path\": $!";
	return $path;
}

# Creates and initialises a node named $name that preloads pgcrypt_at_rest
# with the server secret in $opts{keyfile}, or else in a new secret file in a
# temporary directory.  $opts{conf}, if given, is more postgresql.conf text
# appended after those two settings; $opts{init}, options for init()
# (allows_streaming => 1 for a primary).  The node is not started.  Returns the
# node and the path of its secret file.
sub preloaded_node
{
	my ($name, %opts) = @_;
	my $keyfile = $opts{keyfile}
	  // write_secret_file(PostgreSQL::Test::Utils::tempdir . '/server.key');
	(my $quoted = $keyfile) =~ s/'/''/g;

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opts{init} // {} });
	$node->append_conf(
		'postgresql.conf',
		"shared_preload_libraries = 'pgcrypt_at_rest'\n"
		  . "pgcrypt_at_rest.server_key_file = '$quoted'\n"
		  . ($opts{conf} // ''));
	return ($node, $keyfile);
}

# Polls $node until $sql in database $db prints $expected with nothing on
# stderr, every 0.2 s for at most $seconds.  Returns 1 if it did; otherwise
# shows the query, what was expected and the last output, and returns 0.
# $what names what is waited for.  Unlike PostgreSQL::Test::Cluster's
# poll_query_until, each call sets its own timeout, and a query that fails
# (a function not created yet, say) is waited out rather than reported.
sub wait_for
{
	my ($node, $db, $sql, $expected, $seconds, $what) = @_;
	my $deadline = time() + $seconds;
	my ($stdout, $stderr) = ('', '');
	while (time() < $deadline)
	{
		$node->psql($db, $sql, stdout => \$stdout, stderr => \$stderr);
		return 1 if $stdout eq $expected && $stderr eq '';
		usleep(200_000);
	}
	Test::More::diag("timed out waiting for $what:\n$sql\nexpected: $expected\n"
		  . "last output: $stdout\nstderr: $stderr");
	return 0;
}

1;
