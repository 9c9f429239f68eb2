# Nonces never repeat, within a session or across sessions running at the
# same time.  Every backend is forked from the postmaster, so a nonce pool
# inherited across the fork would repeat nonces between sessions; each
# session here draws 50,000 nonces (many pool refills) while the others do
# the same, and every nonce must be distinct.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

my $sessions = 4;
my $per_session = 50_000;
my $lock_key = 7_340_021;    # advisory lock used as a start barrier

my ($node) = preloaded_node('main');
$node->start;

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
CREATE TABLE nonces (pid int NOT NULL, key_id int NOT NULL, nonce bytea NOT NULL);
});

# The barrier: every session first waits for a shared lock on a key this
# session holds exclusively, so all of them start encrypting together.
my $holder = $node->background_psql('postgres');
$holder->query_safe("SELECT pg_advisory_lock($lock_key)");

my (@session, @pid);
for my $i (1 .. $sessions)
{
	my $s = $node->background_psql('postgres');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	like($pid, qr/^\d+$/, "session $i has a backend pid");
	push @pid, $pid;

	# Queue the whole workload; return as soon as psql has reached the
	# barrier (the \echo runs just before the blocking lock request).
	$s->query_until(
		qr/ready-$i/, qq{
\\echo ready-$i
SELECT pg_advisory_lock_shared($lock_key);
INSERT INTO nonces
	SELECT pg_backend_pid(), pgcrypt_at_rest.key_id(e),
	       substring(e::bytea FROM 6 FOR 24)
	  FROM (SELECT pgcrypt_at_rest.encrypt('x', 'ring') AS e
	          FROM generate_series(1, $per_session)) v;
SELECT pg_advisory_unlock_shared($lock_key);
\\echo done-$i
});
	push @session, $s;
}

# All sessions are connected and blocked on the barrier at the same time.
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) = $sessions
  FROM pg_locks
 WHERE locktype = 'advisory' AND objid = $lock_key AND objsubid = 1
   AND mode = 'ShareLock' AND NOT granted}),
	"all $sessions sessions wait at the barrier");
is( $node->safe_psql('postgres', 'SELECT count(*) FROM nonces'),
	'0', 'no session has encrypted before the barrier is lifted');

# Lift the barrier: all sessions encrypt concurrently.  Then wait for all.
$holder->query_safe("SELECT pg_advisory_unlock($lock_key)");
for my $i (1 .. $sessions)
{
	my $s = $session[ $i - 1 ];
	my $out = $s->query_until(qr/done-$i/, '');
	like($out, qr/done-$i/, "session $i finished its encryptions");
	is($s->{stderr}, '', "session $i reported no error");
	$s->quit;
}
$holder->quit;

my %distinct_pids = map { $_ => 1 } @pid;
is(scalar(keys %distinct_pids), $sessions,
	'the sessions ran in different backends');

my $total = $sessions * $per_session;
is( $node->safe_psql(
		'postgres', q{
SELECT count(*), count(DISTINCT nonce), count(DISTINCT pid),
       count(DISTINCT key_id), min(length(nonce)), max(length(nonce))
  FROM nonces}),
	"$total|$total|$sessions|1|24|24",
	"$total nonces from $sessions backends, all 24 bytes and all distinct");

is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(pid || ':' || n, ',' ORDER BY pid)
		   FROM (SELECT pid, count(*) AS n FROM nonces GROUP BY pid) s"),
	join(',', map { "$_:$per_session" } sort { $a <=> $b } @pid),
	"each of the $sessions session pids wrote $per_session nonces");

# No nonce is shared between two sessions (stated separately from the total
# count so a failure says which kind of repetition happened).
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (SELECT nonce FROM nonces
                       GROUP BY nonce HAVING count(DISTINCT pid) > 1) s}),
	'0',
	'no nonce appears in two sessions');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (SELECT pid, nonce FROM nonces
                       GROUP BY pid, nonce HAVING count(*) > 1) s}),
	'0',
	'no nonce repeats within a session');

# The first nonces of fresh backends differ too (a pool copied from the
# postmaster would make them equal).
my @first;
for my $i (1 .. $sessions)
{
	push @first,
	  $node->safe_psql('postgres',
		"SELECT encode(substring(pgcrypt_at_rest.encrypt('x', 'ring')::bytea FROM 6 FOR 24), 'hex')"
	  );
}
my %distinct_first = map { $_ => 1 } @first;
is(scalar(keys %distinct_first), $sessions,
	'the first nonce of each new backend is different');

$node->stop;

done_testing();
