# One rotation worker per database with the extension.  Two databases with
# the extension have a worker each; a database without it has none that
# lingers (nor do the templates); a database created later is picked up once
# CREATE EXTENSION runs there.  The databases drain independently: an open
# transaction holding a row lock in one delays that database's drain and key
# destruction only.  Statements that need a database without connections
# (CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... RENAME, DROP DATABASE)
# succeed although a worker is connected there: the extension stops it first,
# and it comes back where the database still exists (and, after ALTER
# DATABASE ... ALLOW_CONNECTIONS false, only once connections are allowed).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

my ($node) = preloaded_node(
	'main', conf => q{
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = 0
pgcrypt_at_rest.rotation_delay = 0
pgcrypt_at_rest.rotation_batch_size = 1000
# a worker for each of the (up to five) databases at once: this test is about
# each database's worker coming and going, t/017 about a pool too small
pgcrypt_at_rest.max_workers = 6
max_worker_processes = 10
});
$node->start;

# Workers per database, for the databases named.
sub workers_sql
{
	my @dbs = @_;
	return 'SELECT '
	  . join(', ',
		map { "count(*) FILTER (WHERE datname = '$_')" } @dbs)
	  . " FROM pg_stat_activity WHERE backend_type = 'pgcrypt_at_rest worker'";
}

##############################################################################
# Two databases with the extension, one without.
##############################################################################

$node->safe_psql('postgres', 'CREATE EXTENSION pgcrypt_at_rest');
$node->safe_psql('postgres', 'CREATE DATABASE db2');
$node->safe_psql('db2', 'CREATE EXTENSION pgcrypt_at_rest');
$node->safe_psql('postgres', 'CREATE DATABASE plain');

ok(wait_for($node, 'postgres', workers_sql('postgres', 'db2'), '1|1', 60, 'two workers'),
	'"postgres" and "db2" each have one worker');
is( $node->safe_psql(
		'postgres', q{
SELECT count(DISTINCT datname), count(DISTINCT pid) FROM pg_stat_activity
 WHERE backend_type = 'pgcrypt_at_rest worker' AND datname IN ('postgres', 'db2')}),
	'2|2', 'the two workers are distinct processes in distinct databases');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcrypt_at_rest launcher'"),
	'1', 'one launcher');

# Where the extension is not installed, a worker may be started each nap but
# leaves at once: no worker process is seen in two samples a nap apart.
{
	my %seen;
	my $lingering = 0;
	my $templates = 0;
	for my $sample (1 .. 4)
	{
		my $pids = $node->safe_psql(
			'postgres', q{
SELECT pid, datname FROM pg_stat_activity
 WHERE backend_type = 'pgcrypt_at_rest worker'
   AND datname NOT IN ('postgres', 'db2')});
		for my $row (split /\n/, $pids)
		{
			my ($pid, $datname) = split /\|/, $row;
			$templates++ if $datname =~ /^template/;
			$lingering++ if $seen{$pid}++;
		}
		sleep(1) if $sample < 4;
	}
	is($lingering, 0, 'no worker lingers in a database without the extension');
	is($templates, 0, 'no worker is started in a template database');
}
ok(wait_for($node, 'postgres', workers_sql('plain'), '0', 30, 'no worker in "plain"'),
	'no worker is connected to the database without the extension');

##############################################################################
# The databases drain independently.
##############################################################################

my %old_key;
for my $db ('postgres', 'db2')
{
	$old_key{$db} = $node->safe_psql(
		$db, qq{
SELECT pgcrypt_at_rest.create_keyring('ring');
CREATE TABLE t (id int PRIMARY KEY, plain text NOT NULL, v pgcrypt_at_rest.encrypted);
INSERT INTO t
	SELECT i, '$db ' || i, pgcrypt_at_rest.encrypt('$db ' || i, 'ring')
	  FROM generate_series(1, 5000) i;
});
}

# A transaction in db2, begun before the rotation, holding one row.
my $holder = $node->background_psql('db2');
$holder->query_safe('BEGIN; SELECT id FROM t WHERE id = 1 FOR UPDATE;');

my %new_key;
for my $db ('postgres', 'db2')
{
	$new_key{$db} =
	  $node->safe_psql($db, "SELECT pgcrypt_at_rest.rotate_keyring('ring')");
}

my $count_sql = sub {
	my ($db) = @_;
	return qq{
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $new_key{$db}),
       count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = plain)
  FROM t};
};

# The drain of "postgres" does not wait for db2's transaction.  (Destroying
# its old key does: a transaction holding a snapshot older than the drain, in
# any database, keeps the drain's old row versions readable to the count.)
ok( wait_for(
		$node, 'postgres', $count_sql->('postgres'),
		'5000|5000', 60, '"postgres" to be drained'),
	'"postgres" is drained while db2 has a transaction open');

ok( wait_for(
		$node, 'db2', qq{
SELECT table_name::text, remaining FROM pgcrypt_at_rest.rotation_status
 WHERE key_id = $old_key{db2}},
		't|1', 60, 'db2 to drain all but the locked row'),
	'db2: rotation_status shows the one locked row remaining');
is($node->safe_psql('db2', $count_sql->('db2')),
	'4999|5000', 'db2: every value but the locked one is under the new key');
is( $node->safe_psql(
		'db2', "SELECT pgcrypt_at_rest.key_id(v) FROM t WHERE id = 1"),
	$old_key{db2}, 'db2: the locked row was skipped, not waited for');
is( $node->safe_psql(
		'db2',
		"SELECT status, sealed_copies, drained_at IS NULL FROM pgcrypt_at_rest.keys WHERE key_id = $old_key{db2}"),
	'deprecated|1|t', 'db2: the old key is kept while a value needs it');

$holder->query_safe('ROLLBACK;');
$holder->quit;

ok( wait_for(
		$node, 'postgres',
		"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old_key{postgres}",
		'destroyed', 60, 'the old key of "postgres" to be destroyed'),
	'"postgres": its old key is destroyed once no older transaction is left');

ok( wait_for(
		$node, 'db2',
		"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old_key{db2}",
		'destroyed', 60, 'the old key of db2 to be destroyed'),
	'db2: once the transaction ends, the last row is drained and the key destroyed');
is($node->safe_psql('db2', $count_sql->('db2')),
	'5000|5000', 'db2: every value is under the new key and decrypts');

##############################################################################
# A database created later.
##############################################################################

$node->safe_psql('postgres', 'CREATE DATABASE db3');
$node->safe_psql('db3', 'CREATE EXTENSION pgcrypt_at_rest');
ok(wait_for($node, 'postgres', workers_sql('db3'), '1', 30, 'a worker in db3'),
	'a database created later gets a worker once the extension is created there');
is( $node->safe_psql('postgres', workers_sql('postgres', 'db2', 'db3')),
	'1|1|1', 'one worker in each database with the extension');

##############################################################################
# Statements needing a database without connections.
##############################################################################

{
	my ($stdout, $stderr) = ('', '');
	my $ret = $node->psql('postgres', 'CREATE DATABASE db4 TEMPLATE db3',
		stdout => \$stdout, stderr => \$stderr);
	is($ret, 0, 'CREATE DATABASE ... TEMPLATE of a database with a worker succeeds');
	is($stderr, '', 'no error or warning') or diag($stderr);
}
ok(wait_for($node, 'postgres', workers_sql('db3', 'db4'), '1|1', 30, 'workers in db3 and db4'),
	'the template database gets its worker back and the copy gets its own');

{
	my ($stdout, $stderr) = ('', '');
	my $ret = $node->psql('postgres', 'ALTER DATABASE db4 RENAME TO db4_renamed',
		stdout => \$stdout, stderr => \$stderr);
	is($ret, 0, 'ALTER DATABASE ... RENAME of a database with a worker succeeds');
}
ok( wait_for(
		$node, 'postgres', workers_sql('db4', 'db4_renamed'),
		'0|1', 30, 'the worker of the renamed database'),
	'the renamed database has its worker back, under its new name');

# A database that no longer accepts connections loses its worker for as long.
{
	my ($stdout, $stderr) = ('', '');
	my $ret = $node->psql('postgres', 'ALTER DATABASE db2 ALLOW_CONNECTIONS false',
		stdout => \$stdout, stderr => \$stderr);
	is($ret, 0, 'ALTER DATABASE ... ALLOW_CONNECTIONS false succeeds');
}
ok(wait_for($node, 'postgres', workers_sql('db2'), '0', 30, 'no worker in db2'),
	'the worker leaves a database that no longer accepts connections');
sleep(3);
is($node->safe_psql('postgres', workers_sql('db2')),
	'0', 'three naps later no worker was started there again');
$node->safe_psql('postgres', 'ALTER DATABASE db2 ALLOW_CONNECTIONS true');
ok(wait_for($node, 'postgres', workers_sql('db2'), '1', 30, 'the worker back in db2'),
	'the worker comes back once the database accepts connections again');

for my $db ('db3', 'db4_renamed')
{
	my ($stdout, $stderr) = ('', '');
	my $ret = $node->psql('postgres', "DROP DATABASE $db",
		stdout => \$stdout, stderr => \$stderr);
	is($ret, 0, "DROP DATABASE $db (with the extension and a worker) succeeds");
	like($stderr, qr/^$/, "DROP DATABASE $db: no error") or diag($stderr);
}
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM pg_database WHERE datname IN ('db3', 'db4_renamed')"),
	'0', 'both databases are gone');
ok( wait_for(
		$node, 'postgres', workers_sql('postgres', 'db2', 'db3', 'db4_renamed'),
		'1|1|0|0', 30, 'the workers after DROP DATABASE'),
	'no worker is left for the dropped databases; the others keep theirs');

# DROP DATABASE of a database without the extension works too.
$node->safe_psql('postgres', 'DROP DATABASE plain');

# The remaining workers still work: a new rotation in db2 is drained.
my $third_key = $node->safe_psql('db2', "SELECT pgcrypt_at_rest.rotate_keyring('ring')");
ok( wait_for(
		$node, 'db2',
		"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $new_key{db2}",
		'destroyed', 60, 'the second key of db2 to be destroyed'),
	'db2 still drains after the other databases were dropped');
is( $node->safe_psql(
		'db2', qq{
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $third_key
                          AND pgcrypt_at_rest.decrypt_text(v) = plain) FROM t}),
	'5000', 'db2: every value is under the third key and decrypts');
is( $node->safe_psql(
		'postgres',
		"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $new_key{postgres}"),
	'active', '"postgres" was not rotated by the rotation in db2');

$node->stop;
done_testing();
