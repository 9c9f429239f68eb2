# A restore loads the extension's key tables and the user tables in no fixed
# order: pg_dump orders table data by schema name, so a schema sorting after
# "pgcrypt_at_rest" is loaded after the keys, and pg_restore -j loads tables
# in parallel.  A worker running meanwhile may count a key's values before
# they have arrived.  So keys restored from a dump are held: whatever their
# count, the worker never destroys them, destroy_drained_keys() refuses them
# with a NOTICE, and rotation_status says why, until a DBA runs
# confirm_restore().  Then they are drained and destroyed like any other.
#
# The source has values under a deprecated key in schema "aaa" (loaded before
# the key tables) and "zzz" (after).  It is dumped with pg_dump -Fc and
# restored, with the worker running and destroy_grace = 0, into new
# databases of the same server (same secret):
#
#   (a) serially with pg_restore;
#   (b) with pg_restore -j 4;
#   (c) everything but zzz's data first, then, once the worker has drained
#       aaa and tried to destroy the key, finding no value left under it,
#       zzz's data.
#
# Every restored value decrypts to its original; the key stays deprecated.
# After confirm_restore() in (c), the worker re-encrypts and destroys it.
# A control runs (c) with confirm_restore() too early: the key is destroyed
# within the same wait, and the late values no longer decrypt.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

my ($node) = preloaded_node(
	'main', conf => q{
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = 0
pgcrypt_at_rest.rotation_delay = 0
# paused while the source is made, so that it keeps values under the
# deprecated key when it is dumped
pgcrypt_at_rest.worker_enabled = off
# workers for six databases
max_worker_processes = 16
});
$node->start;

###########################################################################
# The source: values under a deprecated key before and after the key tables
###########################################################################

my $rows_old = 300;    # per table, under the key then deprecated
my $rows_new = 20;     # per table, under the key that replaced it
my $rows = $rows_old + $rows_new;

$node->safe_psql('postgres', 'CREATE DATABASE src');
my $old = $node->safe_psql('src', q{
CREATE EXTENSION pgcrypt_at_rest;
CREATE SCHEMA aaa;
CREATE SCHEMA zzz;
CREATE TABLE aaa.t (id int PRIMARY KEY, plain text NOT NULL, v pgcrypt_at_rest.encrypted NOT NULL);
CREATE TABLE zzz.t (id int PRIMARY KEY, plain text NOT NULL, v pgcrypt_at_rest.encrypted NOT NULL);
SELECT pgcrypt_at_rest.create_keyring('ring');
});
$node->safe_psql('src', qq{
INSERT INTO aaa.t SELECT i, 'aaa ' || i, pgcrypt_at_rest.encrypt('aaa ' || i, 'ring')
  FROM generate_series(1, $rows_old) i;
INSERT INTO zzz.t SELECT i, 'zzz ' || i, pgcrypt_at_rest.encrypt('zzz ' || i, 'ring')
  FROM generate_series(1, $rows_old) i;
});
my $new = $node->safe_psql('src', "SELECT pgcrypt_at_rest.rotate_keyring('ring')");
$node->safe_psql('src', qq{
INSERT INTO aaa.t SELECT i, 'aaa ' || i, pgcrypt_at_rest.encrypt('aaa ' || i, 'ring')
  FROM generate_series($rows_old + 1, $rows) i;
INSERT INTO zzz.t SELECT i, 'zzz ' || i, pgcrypt_at_rest.encrypt('zzz ' || i, 'ring')
  FROM generate_series($rows_old + 1, $rows) i;
});

# per table: values that decrypt to their plaintext, values, values under the old key
my $check_sql = qq{
SELECT (SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = plain) || '/' || count(*)
               || ' old ' || count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $old) FROM aaa.t),
       (SELECT count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = plain) || '/' || count(*)
               || ' old ' || count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $old) FROM zzz.t)};
my $keys_sql = 'SELECT key_id, status, restored FROM pgcrypt_at_rest.keys ORDER BY generation';

is( $node->safe_psql('src', $check_sql),
	"$rows/$rows old $rows_old|$rows/$rows old $rows_old",
	'source: every value decrypts; the first values of each table are under the old key');
is($node->safe_psql('src', $keys_sql),
	"$old|deprecated|f\n$new|active|f", 'source: the old key is deprecated, its own');

my $tempdir = PostgreSQL::Test::Utils::tempdir;
my $dump = "$tempdir/src.dump";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('src') ],
	'pg_dump -Fc of the source');

# The premise: aaa's data is loaded before the key tables, zzz's after.
my ($list) = run_command([ 'pg_restore', '-l', $dump ]);
my @data = grep { /TABLE DATA/ } split /\n/, $list;
my ($aaa_at) = grep { $data[$_] =~ /TABLE DATA aaa t / } 0 .. $#data;
my ($keys_at) = grep { $data[$_] =~ /TABLE DATA pgcrypt_at_rest data_key / } 0 .. $#data;
my ($zzz_at) = grep { $data[$_] =~ /TABLE DATA zzz t / } 0 .. $#data;
ok( defined $aaa_at && defined $keys_at && defined $zzz_at
	  && $aaa_at < $keys_at && $keys_at < $zzz_at,
	'the dump loads aaa.t before the data keys and zzz.t after them')
  or diag("table data in the dump:\n" . join("\n", @data));

# The worker runs from now on.  In the source, whose key is its own, it
# re-encrypts every value and destroys the old key at once (destroy_grace
# 0): what would befall a restored key that were not held.
$node->safe_psql('postgres', q{
ALTER SYSTEM SET pgcrypt_at_rest.worker_enabled = on;
SELECT pg_reload_conf();
});
ok( wait_for(
		$node, 'src', "SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old",
		'destroyed', 60, 'the source worker to destroy the old key'),
	'source: with the worker running, a drained key of its own is destroyed at once');
is( $node->safe_psql('src', $check_sql),
	"$rows/$rows old 0|$rows/$rows old 0",
	'source: its values were re-encrypted first');

###########################################################################
# Helpers
###########################################################################

# Waits until the worker of $db has re-encrypted every value under the old
# key in @tables and has tried to destroy the key, finding none left (the
# LOG line it writes once per key, after $offset in the server log), then
# watches the key for $seconds more.  On the code before holds, the key was
# destroyed by then.  Returns the key's status, restored flag and why it is
# held, as "status|restored|held".
sub worker_had_its_chance
{
	my ($db, $offset, $seconds, @tables) = @_;
	my $left = join(' + ',
		map { "(SELECT count(*) FROM $_ WHERE pgcrypt_at_rest.key_id(v) = $old)" } @tables);
	my $key_sql = qq{
SELECT k.status, k.restored,
       (SELECT string_agg(DISTINCT left(destruction_held, 20), ',')
          FROM pgcrypt_at_rest.rotation_status WHERE key_id = k.key_id)
  FROM pgcrypt_at_rest.keys k WHERE k.key_id = $old};

	wait_for($node, $db, "SELECT $left", '0', 60,
		"the worker of $db to re-encrypt @tables")
	  or return 'values left under the old key';
	my $deadline = time() + 60;
	until (slurp_file($node->logfile, $offset) =~
		  /pgcrypt_at_rest does not destroy key $old: restored from a dump/)
	{
		return 'no hold logged: ' . $node->safe_psql($db, $key_sql)
		  if time() > $deadline;
		usleep(200_000);
	}
	my $state;
	for (my $until = time() + $seconds; time() < $until; usleep(250_000))
	{
		$state = $node->safe_psql($db, $key_sql);
		last if $state !~ /^deprecated\|/;
	}
	return $state;
}

# What every restored database must show while its keys are held.
sub check_held
{
	my ($db) = @_;

	is($node->safe_psql($db, $check_sql) =~ s/ old \d+//gr,
		"$rows/$rows|$rows/$rows", "$db: every restored value decrypts to its original");
	is($node->safe_psql($db, $keys_sql),
		"$old|deprecated|t\n$new|active|t",
		"$db: the old key is still deprecated, and both keys are restored ones");
	like(
		$node->safe_psql($db,
			"SELECT DISTINCT destruction_held FROM pgcrypt_at_rest.rotation_status WHERE key_id = $old"),
		qr/^restored from a dump: kept until pgcrypt_at_rest\.confirm_restore\(\) says every table's data has been restored$/,
		"$db: rotation_status says why the old key is not destroyed");

	my ($ret, $stdout, $stderr) =
	  $node->psql($db, 'SELECT pgcrypt_at_rest.destroy_drained_keys()');
	is($stdout, '{}', "$db: destroy_drained_keys() destroys none of the restored keys");
	like($stderr,
		qr/NOTICE:  pgcrypt_at_rest does not destroy key $old: restored from a dump/,
		"$db: destroy_drained_keys() says why in a NOTICE");
	is( $node->safe_psql($db, "SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old"),
		'deprecated', "$db: the old key is still there after destroy_drained_keys()");
}

###########################################################################
# (a) pg_restore, serially
###########################################################################

my $offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE dst_serial');
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst_serial'), $dump ],
	'(a) pg_restore');
is(worker_had_its_chance('dst_serial', $offset, 3, 'aaa.t', 'zzz.t'),
	'deprecated|t|restored from a dump',
	'(a) the worker drained every value and still keeps the old key');
check_held('dst_serial');

###########################################################################
# (b) pg_restore -j 4
###########################################################################

# The key tables have no foreign keys between them (1.2): pg_restore -j loads
# table data in parallel, and pg_dump orders an extension's configuration
# data only for a serial restore.
$offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE dst_j');
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '-j', '4', '-d', $node->connstr('dst_j'), $dump ],
	'(b) pg_restore -j 4 of the whole dump');
is(worker_had_its_chance('dst_j', $offset, 3, 'aaa.t', 'zzz.t'),
	'deprecated|t|restored from a dump',
	'(b) the worker drained every value and still keeps the old key');
check_held('dst_j');

###########################################################################
# (c) zzz's data arrives late
###########################################################################

my $list_first = "$tempdir/first.list";
my $list_late = "$tempdir/late.list";
{
	open(my $first, '>', $list_first) or die "could not write $list_first: $!";
	open(my $late, '>', $list_late) or die "could not write $list_late: $!";
	for my $line (split /\n/, $list)
	{
		if ($line =~ /TABLE DATA zzz t /)
		{
			print $late "$line\n";
			print $first ";$line\n";
		}
		else
		{
			print $first "$line\n";
		}
	}
	close $first or die;
	close $late or die;
}

$offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE dst_late');
$node->command_ok(
	[
		'pg_restore', '--exit-on-error', '-L', $list_first,
		'-d', $node->connstr('dst_late'), $dump
	],
	'(c) pg_restore of everything but zzz.t\'s data');
is($node->safe_psql('dst_late', 'SELECT count(*) FROM zzz.t'),
	'0', '(c) zzz.t is still empty');

# The worker re-encrypts aaa, counts every table, finds nothing under the
# old key, and tries to destroy it: the code before holds destroyed it here.
is(worker_had_its_chance('dst_late', $offset, 5, 'aaa.t'),
	'deprecated|t|restored from a dump',
	'(c) with no value left under the old key, the worker still keeps it');

$node->command_ok(
	[
		'pg_restore', '--exit-on-error', '-L', $list_late,
		'-d', $node->connstr('dst_late'), $dump
	],
	'(c) pg_restore of zzz.t\'s data, late');
is($node->safe_psql('dst_late', 'SELECT count(*) FROM zzz.t WHERE pgcrypt_at_rest.key_id(v) = ' . $old),
	$rows_old, '(c) the late values are under the old key');
check_held('dst_late');

###########################################################################
# confirm_restore(): the restored keys are this database's; the old key is
# drained and destroyed like any other
###########################################################################

is($node->safe_psql('dst_late', 'SELECT pgcrypt_at_rest.confirm_restore()'),
	'2', 'confirm_restore() releases both restored keys');
is( $node->safe_psql('dst_late',
		'SELECT key_id, restored FROM pgcrypt_at_rest.keys ORDER BY generation'),
	"$old|f\n$new|f", 'no key is shown as restored any more');
is( $node->safe_psql('dst_late',
		"SELECT count(*) FROM pgcrypt_at_rest.rotation_status WHERE destruction_held IS NOT NULL"),
	'0', 'rotation_status shows no hold');
ok( wait_for(
		$node, 'dst_late', "SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old",
		'destroyed', 60, 'the worker to destroy the old key'),
	'after confirm_restore() the worker destroys the old key');
is( $node->safe_psql('dst_late', $check_sql),
	"$rows/$rows old 0|$rows/$rows old 0",
	'every value was re-encrypted first, and decrypts to its original');
is($node->safe_psql('dst_late', 'SELECT pgcrypt_at_rest.confirm_restore()'),
	'0', 'a second confirm_restore() has nothing left to release');

###########################################################################
# The control: (c) again, but with confirm_restore() run too early, before
# zzz's data.  Unheld, the key is destroyed within the wait above, as every
# restored key was before holds, and the late values are lost.
###########################################################################

$node->safe_psql('postgres', 'CREATE DATABASE dst_early');
$node->command_ok(
	[
		'pg_restore', '--exit-on-error', '-L', $list_first,
		'-d', $node->connstr('dst_early'), $dump
	],
	'(control) pg_restore of everything but zzz.t\'s data');
is($node->safe_psql('dst_early', 'SELECT pgcrypt_at_rest.confirm_restore()'),
	'2', '(control) confirm_restore() before the restore is complete');
ok( wait_for(
		$node, 'dst_early', "SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $old",
		'destroyed', 60, 'the worker to destroy the old key'),
	'(control) released, the old key is destroyed once aaa is drained');
$node->command_ok(
	[
		'pg_restore', '--exit-on-error', '-L', $list_late,
		'-d', $node->connstr('dst_early'), $dump
	],
	'(control) pg_restore of zzz.t\'s data, late');
{
	my ($ret, $stdout, $stderr) = $node->psql('dst_early',
		'SELECT count(*) FROM zzz.t WHERE pgcrypt_at_rest.decrypt_text(v) = plain');
	like($stderr, qr/key $old of keyring "ring" was destroyed/,
		'(control) the late values under the old key no longer decrypt');
}

# the other restored databases still hold their copies of the key
for my $db ('dst_serial', 'dst_j')
{
	is( $node->safe_psql($db, "SELECT status, restored FROM pgcrypt_at_rest.keys WHERE key_id = $old"),
		'deprecated|t', "$db: the old key is still held");
}

$node->stop;

done_testing();
