# A crash (kill -9 of the postmaster) in the middle of a drain: the batches
# committed before the crash stay done, the pass resumes from the position
# stored in rotation_pass rather than starting over, and the drain completes
# with every value under the new key and decrypting to its original.
# rotation_progress, updated in each batch's transaction, ends with exactly
# one re-encryption per row: nothing was lost or counted twice.  With a long
# destroy_grace the drained key is kept; once the grace is lowered it is
# destroyed.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use Time::HiRes qw(usleep);

my $rows = 60000;

# Small batches with a pause between them: the drain takes several seconds.
my ($node) = preloaded_node(
	'main', conf => q{
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = '1h'
pgcrypt_at_rest.rotation_delay = '100ms'
pgcrypt_at_rest.rotation_batch_size = 500
});
$node->start;

my $key_a = $node->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
});
$node->safe_psql(
	'postgres', qq{
CREATE TABLE crash (id int PRIMARY KEY, plain text NOT NULL,
                    v pgcrypt_at_rest.encrypted NOT NULL);
INSERT INTO crash
	SELECT i, 'crash value ' || i, pgcrypt_at_rest.encrypt('crash value ' || i, 'ring')
	  FROM generate_series(1, $rows) i;
});
my $relid = $node->safe_psql('postgres', "SELECT 'crash'::regclass::oid");

# Values under a key, and values decrypting to their original.
sub counts
{
	my ($key) = @_;
	return $node->safe_psql(
		'postgres', qq{
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $key),
       count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = plain)
  FROM crash});
}
is(counts($key_a), "$rows|$rows", 'before rotation: every value is under the first key');

my $key_b =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.rotate_keyring('ring')");

# Wait until the pass has committed a few batches, then crash.
ok( wait_for(
		$node, 'postgres', qq{
SELECT p.relid = $relid AND (p.resume_after::text::point)[0] > 0 AND g.reencrypted >= 2000
  FROM pgcrypt_at_rest.rotation_pass p,
       pgcrypt_at_rest.rotation_progress g
 WHERE g.key_id = $key_a AND g.relid = $relid},
		't', 60, 'the drain to make progress'),
	'the worker started the pass and committed batches');

# Every child of the postmaster, to wait for them after it dies: a new
# postmaster refuses to start while one still holds the old shared memory.
sub postmaster_children
{
	my ($pm) = @_;
	my @children;
	opendir(my $proc, '/proc') or die "could not open /proc: $!";
	for my $pid (grep { /^[0-9]+$/ } readdir($proc))
	{
		open(my $fh, '<', "/proc/$pid/stat") or next;
		my $stat = <$fh>;
		close $fh;
		# the command may hold spaces and parentheses: the fields follow the last ')'
		next unless defined $stat && $stat =~ /^.*\)\s+\S+\s+([0-9]+)/s;
		push @children, $pid if $1 == $pm;
	}
	closedir($proc);
	return @children;
}

# Starts the node, retrying while a process of the killed one lingers.
sub poll_start
{
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		return 1 if $node->start(fail_ok => 1);
		usleep(200_000);
		$node->stop('fast', fail_ok => 1);
	}
	return $node->start;
}

my $postmaster_pid = PostgreSQL::Test::Utils::slurp_file($node->data_dir . '/postmaster.pid');
$postmaster_pid =~ s/\n.*//s;
my @pids = postmaster_children($postmaster_pid);
cmp_ok(scalar(@pids), '>', 0, 'the postmaster has children');
my $offset = -s $node->logfile;
$node->kill9;
{
	my $deadline = time() + 60;
	while (time() < $deadline && grep { kill(0, $_) } @pids)
	{
		usleep(100_000);
	}
	is(scalar(grep { kill(0, $_) } @pids), 0,
		'every server process exited after the postmaster was killed');
}

# Restart with the worker paused, to see what the crash left.
$node->append_conf('postgresql.conf', 'pgcrypt_at_rest.worker_enabled = off');
ok(poll_start(), 'the server restarts after the crash');
ok($node->log_contains(qr/database system was interrupted|was not properly shut down/, $offset),
	'the restart went through crash recovery');

my ($done_before, $decrypting) = split /\|/, counts($key_b);
note("$done_before of $rows values were re-encrypted before the crash");
cmp_ok($done_before, '>', 0, 'values re-encrypted before the crash are still under the new key');
cmp_ok($done_before, '<', $rows, 'the crash happened in the middle of the drain');
is(counts($key_a), ($rows - $done_before) . "|$rows",
	'after the crash: the other values are under the old key, every value decrypts');

my $pass = $node->safe_psql('postgres',
	'SELECT relid, (resume_after::text::point)[0]::int, started_at FROM pgcrypt_at_rest.rotation_pass');
my ($pass_relid, $pass_block, $pass_started) = split /\|/, $pass;
note("rotation_pass after the crash: $pass");
is($pass_relid, $relid, 'rotation_pass survived the crash, on the table being drained');
cmp_ok($pass_block, '>', 0, 'rotation_pass stands past the first block');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM crash
 WHERE (ctid::text::point)[0] < $pass_block AND pgcrypt_at_rest.key_id(v) = $key_a}),
	'0', 'no value before the stored position is under the old key');
is( $node->safe_psql(
		'postgres',
		"SELECT reencrypted FROM pgcrypt_at_rest.rotation_progress WHERE key_id = $key_a AND relid = $relid"),
	$done_before,
	'rotation_progress counts exactly the re-encryptions that committed before the crash');

# Resume, slowly enough to watch the same pass move on.
$node->safe_psql(
	'postgres', q{
ALTER SYSTEM SET pgcrypt_at_rest.rotation_delay = '300ms';
ALTER SYSTEM SET pgcrypt_at_rest.worker_enabled = on;
SELECT pg_reload_conf();
});
ok( wait_for(
		$node, 'postgres', qq{
SELECT relid = $relid AND (resume_after::text::point)[0] > $pass_block AND started_at = '$pass_started'
  FROM pgcrypt_at_rest.rotation_pass},
		't', 60, 'the pass to resume'),
	'the pass resumed from the stored position (same pass, further on), not from the start');

# Then let it finish quickly.
$node->safe_psql(
	'postgres', q{
ALTER SYSTEM SET pgcrypt_at_rest.rotation_delay = 0;
SELECT pg_reload_conf();
});
ok( wait_for(
		$node, 'postgres',
		"SELECT drained_at IS NOT NULL FROM pgcrypt_at_rest.keys WHERE key_id = $key_a",
		't', 90, 'the old key to be drained'),
	'the drain completed after the crash');

is(counts($key_b), "$rows|$rows",
	'every value is under the new key and decrypts to its original');
is(counts($key_a), "0|$rows", 'no value is left under the old key');
is( $node->safe_psql(
		'postgres', qq{
SELECT sum(reencrypted), sum(unrotatable), sum(coalesce(remaining, 0)), count(last_error)
  FROM pgcrypt_at_rest.rotation_progress WHERE key_id = $key_a}),
	"$rows|0|0|0",
	'rotation_progress: one re-encryption per row in all, none unrotatable, none left, no error');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pgcrypt_at_rest.rotation_pass'),
	'0', 'no pass is left running');
ok(!$node->log_contains(qr/pgcrypt_at_rest worker: .* failed/, $offset),
	'no worker step failed after the restart');

# destroy_grace is one hour: the drained key is kept, with its copy.
is( $node->safe_psql('postgres',
		"SELECT status, sealed_copies FROM pgcrypt_at_rest.keys WHERE key_id = $key_a"),
	'deprecated|1', 'within destroy_grace the drained key is not destroyed');

$node->safe_psql(
	'postgres', q{
ALTER SYSTEM SET pgcrypt_at_rest.destroy_grace = 0;
SELECT pg_reload_conf();
});
ok( wait_for(
		$node, 'postgres',
		"SELECT status, sealed_copies FROM pgcrypt_at_rest.keys WHERE key_id = $key_a",
		'destroyed|0', 60, 'the old key to be destroyed'),
	'once destroy_grace is lowered, the key is destroyed');
is(counts($key_b), "$rows|$rows", 'every value still decrypts');

$node->stop;
done_testing();
