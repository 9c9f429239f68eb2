# pg_dump carries the key tables (extension configuration tables), so a dump
# restored on the same server (same secret) decrypts every value: under the
# first key of a keyring, under the key that replaced it after rotation,
# under another keyring's key, with and without a context.  Both the custom
# format (pg_restore) and the plain format (psql) are restored.

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
# the ciphertexts are compared byte for byte: no re-encryption meanwhile
pgcrypt_at_rest.worker_enabled = off
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');

# ring: key A, then rotated to key B; other: key C.  Rows record how they
# were encrypted so every one can be checked after the restore.
my $key_a =
  $node->safe_psql('src', q{
CREATE EXTENSION pgcrypt_at_rest;
CREATE TABLE secrets (id int PRIMARY KEY, plain text NOT NULL, ctx bytea,
                      is_bytea bool NOT NULL DEFAULT false,
                      v pgcrypt_at_rest.encrypted NOT NULL);
SELECT pgcrypt_at_rest.create_keyring('ring');
});
my $key_c =
  $node->safe_psql('src', "SELECT pgcrypt_at_rest.create_keyring('other')");

$node->safe_psql(
	'src', q{
INSERT INTO secrets (id, plain, v)
	SELECT i, 'first key ' || i, pgcrypt_at_rest.encrypt('first key ' || i, 'ring')
	  FROM generate_series(1, 40) i;
INSERT INTO secrets (id, plain, ctx, v)
	SELECT i, 'first key, context ' || i, convert_to('row ' || i, 'UTF8'),
	       pgcrypt_at_rest.encrypt('first key, context ' || i, 'ring',
	                               convert_to('row ' || i, 'UTF8'))
	  FROM generate_series(41, 50) i;
INSERT INTO secrets (id, plain, is_bytea, v)
	SELECT i, 'bytes ' || i, true,
	       pgcrypt_at_rest.encrypt(convert_to('bytes ' || i, 'UTF8'), 'ring')
	  FROM generate_series(51, 55) i;
INSERT INTO secrets (id, plain, v)
	SELECT i, 'other keyring ' || i, pgcrypt_at_rest.encrypt('other keyring ' || i, 'other')
	  FROM generate_series(56, 65) i;
});

my $key_b =
  $node->safe_psql('src', "SELECT pgcrypt_at_rest.rotate_keyring('ring')");
isnt($key_b, $key_a, 'rotation made a new key');

$node->safe_psql(
	'src', q{
INSERT INTO secrets (id, plain, v)
	SELECT i, 'second key ' || i, pgcrypt_at_rest.encrypt('second key ' || i, 'ring')
	  FROM generate_series(66, 90) i;
INSERT INTO secrets (id, plain, ctx, is_bytea, v)
	SELECT i, 'second key, context ' || i, convert_to('row ' || i, 'UTF8'), true,
	       pgcrypt_at_rest.encrypt(convert_to('second key, context ' || i, 'UTF8'), 'ring',
	                               convert_to('row ' || i, 'UTF8'))
	  FROM generate_series(91, 100) i;
});

# How many rows decrypt to their recorded plaintext.
my $check_sql = q{
SELECT count(*) FILTER (WHERE
         CASE WHEN is_bytea AND ctx IS NULL
                THEN pgcrypt_at_rest.decrypt(v) = convert_to(plain, 'UTF8')
              WHEN is_bytea
                THEN pgcrypt_at_rest.decrypt(v, ctx) = convert_to(plain, 'UTF8')
              WHEN ctx IS NULL
                THEN pgcrypt_at_rest.decrypt_text(v) = plain
              ELSE pgcrypt_at_rest.decrypt_text(v, ctx) = plain
         END),
       count(*)
  FROM secrets};
my $values_sql =
  'SELECT id, pgcrypt_at_rest.key_id(v), v::text FROM secrets ORDER BY id';
my $key_id_counts_sql =
  'SELECT pgcrypt_at_rest.key_id(v), count(*) FROM secrets GROUP BY 1 ORDER BY 1';
my $keys_sql = q{
SELECT key_id, keyring, status, created_at, deprecated_at, destroyed_at, sealed_copies
  FROM pgcrypt_at_rest.keys ORDER BY key_id};
my $keyrings_sql =
  'SELECT name, active_key_id, deprecated_keys, created_at FROM pgcrypt_at_rest.keyrings ORDER BY name';
my $servers_sql = q{
SELECT count(*), string_agg(name, ','),
       bool_and(public_key = pgcrypt_at_rest.server_public_key())
  FROM pgcrypt_at_rest.servers};

is($node->safe_psql('src', $check_sql), '100|100', 'source: every value decrypts');
is( $node->safe_psql('src', $key_id_counts_sql),
	join("\n", sort { (split /\|/, $a)[0] <=> (split /\|/, $b)[0] }
		  ("$key_a|55", "$key_b|35", "$key_c|10")),
	'source: values are under the first, rotated and other keys');
is( $node->safe_psql('src',
		'SELECT key_id, keyring, status, sealed_copies FROM pgcrypt_at_rest.keys ORDER BY key_id'),
	join("\n", sort { (split /\|/, $a)[0] <=> (split /\|/, $b)[0] }
		  ("$key_a|ring|deprecated|1", "$key_b|ring|active|1", "$key_c|other|active|1")),
	'source: key statuses before the dump');

my %src = (
	values => $node->safe_psql('src', $values_sql),
	keys => $node->safe_psql('src', $keys_sql),
	keyrings => $node->safe_psql('src', $keyrings_sql),
	servers => $node->safe_psql('src', $servers_sql));
like($src{servers}, qr/^1\|main [0-9a-f]{8}\|t$/, 'source: one server, this one, named with its fingerprint');

# Dump in both formats.
my $tempdir = PostgreSQL::Test::Utils::tempdir;
my $dump_custom = "$tempdir/src.dump";
my $dump_plain = "$tempdir/src.sql";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump_custom, '-d', $node->connstr('src') ],
	'pg_dump, custom format');
$node->command_ok([ 'pg_dump', '-Fp', '-f', $dump_plain, '-d', $node->connstr('src') ],
	'pg_dump, plain format');

my $plain_sql = slurp_file($dump_plain);
like($plain_sql, qr/^COPY pgcrypt_at_rest\.sealed_key\b/m,
	'the plain dump contains the sealed keys');
like($plain_sql, qr/^COPY pgcrypt_at_rest\.data_key\b/m,
	'the plain dump contains the data keys');

# Restore each into a new database on the same server.
$node->safe_psql('postgres', 'CREATE DATABASE dst_custom');
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst_custom'), $dump_custom ],
	'pg_restore of the custom-format dump');

$node->safe_psql('postgres', 'CREATE DATABASE dst_plain');
$node->command_ok(
	[
		'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $dump_plain,
		'-d', $node->connstr('dst_plain')
	],
	'psql restore of the plain-format dump');


for my $db ('dst_custom', 'dst_plain')
{
	is($node->safe_psql($db, $check_sql),
		'100|100', "$db: every value decrypts to the original");
	is($node->safe_psql($db, $values_sql),
		$src{values}, "$db: values and their key ids are unchanged");
	is($node->safe_psql($db, $keys_sql),
		$src{keys}, "$db: keys view has the same key ids, statuses and copies");
	is($node->safe_psql($db, $keyrings_sql),
		$src{keyrings}, "$db: keyrings view is unchanged");
	is($node->safe_psql($db, $servers_sql),
		$src{servers}, "$db: servers view has exactly one row, this server");

	# Values under each key, checked separately so a failure names the key.
	for my $key ($key_a, $key_b, $key_c)
	{
		is( $node->safe_psql($db,
				"$check_sql WHERE pgcrypt_at_rest.key_id(v) = $key"),
			$key == $key_a ? '55|55' : $key == $key_b ? '35|35' : '10|10',
			"$db: every value under key $key decrypts");
	}

	# A wrong context still fails after the restore.
	my ($ret, $stdout, $stderr) = $node->psql($db,
		"SELECT pgcrypt_at_rest.decrypt_text(v, 'wrong'::bytea) FROM secrets WHERE id = 41");
	like($stderr, qr/could not decrypt a value under key $key_a/,
		"$db: a wrong context is still rejected");

	# New values use the restored active key.
	is( $node->safe_psql(
			$db, q{
SELECT pgcrypt_at_rest.key_id(e), pgcrypt_at_rest.decrypt_text(e)
  FROM (SELECT pgcrypt_at_rest.encrypt('written after restore', 'ring') AS e) s}),
		"$key_b|written after restore",
		"$db: a new encrypt uses the restored active key and round-trips");
	is( $node->safe_psql(
			$db, q{
SELECT pgcrypt_at_rest.key_id(e), pgcrypt_at_rest.decrypt_text(e, '\x01'::bytea)
  FROM (SELECT pgcrypt_at_rest.encrypt('other ring', 'other', '\x01'::bytea) AS e) s}),
		"$key_c|other ring",
		"$db: a new encrypt under the other keyring round-trips");

	# A rotation makes a fresh id, and (the creation order's sequence was
	# restored) a key newer than every restored one.
	my $rotated =
	  $node->safe_psql($db, "SELECT pgcrypt_at_rest.rotate_keyring('ring')");
	is($node->safe_psql($db, "SELECT count(*) FROM pgcrypt_at_rest.keys WHERE key_id IN ($key_a, $key_b, $key_c)"),
		'3', "$db: the restored keys are there");
	ok($rotated != $key_a && $rotated != $key_b && $rotated != $key_c,
		"$db: rotation after restore makes a key id never used before");
	is( $node->safe_psql(
			$db, qq{
SELECT bool_and(k.created_order < n.created_order) FROM pgcrypt_at_rest.data_key k, pgcrypt_at_rest.data_key n
 WHERE n.id = $rotated AND k.id <> n.id}),
		't', "$db: and the newest key of all");
	is( $node->safe_psql(
			$db, qq{
SELECT pgcrypt_at_rest.key_id(e), pgcrypt_at_rest.decrypt_text(e)
  FROM (SELECT pgcrypt_at_rest.encrypt('after rotation', 'ring') AS e) s}),
		"$rotated|after rotation",
		"$db: values under the post-restore key round-trip");
	is($node->safe_psql($db, $check_sql),
		'100|100', "$db: restored values still decrypt after the rotation");
	my $fresh = $node->safe_psql($db, "SELECT pgcrypt_at_rest.create_keyring('fresh')");
	is($node->safe_psql($db, "SELECT count(*) FROM pgcrypt_at_rest.keys WHERE key_id = $fresh"),
		'1', "$db: a new keyring gets a fresh key id");
}

# The source database is unaffected by the restores.
is($node->safe_psql('src', $keys_sql), $src{keys}, 'source: keys unchanged');
is($node->safe_psql('src', $check_sql), '100|100', 'source: still decrypts');

# Restored onto another server with its own secret: the restore must not
# fail on the server rows (see the keyring regression test for a name
# clash), and must keep every sealed copy for the original server.
my ($other) = preloaded_node(
	'other', conf => q{
pgcrypt_at_rest.worker_enabled = off
});
$other->start;
$other->safe_psql('postgres', 'CREATE DATABASE dst');
$other->command_ok(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $dump_plain, '-d', $other->connstr('dst') ],
	'restore onto another server succeeds');
is( $other->safe_psql('dst',
		q{SELECT count(*), count(DISTINCT name),
		         bool_and(name ~ (' ' || left(encode(public_key, 'hex'), 8) || '$')),
		         string_agg(name, ',' ORDER BY name)
		    FROM pgcrypt_at_rest.servers}),
	'2|2|t|main '
	  . substr($node->safe_psql('src', q{SELECT encode(pgcrypt_at_rest.server_public_key(), 'hex')}), 0, 8)
	  . ',other '
	  . substr($other->safe_psql('dst', q{SELECT encode(pgcrypt_at_rest.server_public_key(), 'hex')}), 0, 8),
	'both servers are listed, under distinct names with their own fingerprints');
is( $other->safe_psql('dst',
		'SELECT count(*) FILTER (WHERE sealed_copies = 1) = count(*) FROM pgcrypt_at_rest.keys'),
	't', 'every restored key kept its sealed copy for the original server');
my ($ret, $stdout, $stderr) = $other->psql('dst',
	'SELECT pgcrypt_at_rest.decrypt_text(v) FROM secrets WHERE id = 1');
like($stderr, qr/this server holds no copy of key $key_a/,
	'the other server reports it holds no copy, not an unknown key');
$other->stop;

$node->stop;

done_testing();
