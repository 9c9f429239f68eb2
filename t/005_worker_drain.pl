# The rotation worker drains after rotate_keyring() without anyone calling
# drain(): a 200,000-row table, a partitioned table (two range partitions and
# a sub-partitioned one), an inheritance parent and child, and columns whose
# type is a domain (and a domain over a domain) over encrypted.  Every value
# ends under the new key and decrypts to its original; the old key is then
# destroyed (no sealed copy left), and a copy of an old ciphertext kept as
# bytea (which the worker does not rotate) no longer decrypts.  User
# triggers never fire and no other column changes.
#
# Values bound to a context taken from the row cannot be re-encrypted until
# the column declares that context: until then their key stays, and
# rotation_status says how many values cannot be rotated and why; once
# set_column_context() is called, the worker drains them and destroys the key.
#
# Last, rows hidden from the table's owner by FORCE ROW LEVEL SECURITY are
# re-encrypted too, and none is left under a destroyed key.

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
pgcrypt_at_rest.rotation_batch_size = 5000
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION pgcrypt_at_rest');

##############################################################################
# The launcher and this database's worker are running.
##############################################################################

ok( wait_for(
		$node, 'postgres', q{
SELECT count(*) FILTER (WHERE backend_type = 'pgcrypt_at_rest launcher' AND datname IS NULL),
       count(*) FILTER (WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'postgres')
  FROM pg_stat_activity},
		'1|1', 60, 'the launcher and the worker'),
	'pg_stat_activity shows one launcher (no database) and one worker for "postgres"');

##############################################################################
# Data under the first key of each keyring.
##############################################################################

my $key_a =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('ring')");
my $key_c =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('ctxring')");

$node->safe_psql(
	'postgres', q{
CREATE DOMAIN secret AS pgcrypt_at_rest.encrypted
	CHECK (pgcrypt_at_rest.key_id(VALUE) > 0);
CREATE DOMAIN secret_nested AS secret;

-- The big table, with triggers that record any update.
CREATE TABLE audit (op text, id int, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE big (id int PRIMARY KEY, plain text NOT NULL, note text NOT NULL,
                  updated_at timestamptz NOT NULL DEFAULT '2000-01-01 00:00:00+00',
                  v pgcrypt_at_rest.encrypted NOT NULL);
CREATE FUNCTION big_before_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.updated_at := clock_timestamp();
	INSERT INTO audit (op, id) VALUES ('before update', NEW.id);
	RETURN NEW;
END $$;
CREATE FUNCTION big_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO audit (op, id) VALUES ('after update', NEW.id);
	RETURN NULL;
END $$;
CREATE TRIGGER big_before BEFORE UPDATE ON big
	FOR EACH ROW EXECUTE FUNCTION big_before_update();
CREATE TRIGGER big_after AFTER UPDATE ON big
	FOR EACH ROW EXECUTE FUNCTION big_after_update();
CREATE FUNCTION big_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO audit (op) VALUES ('statement ' || TG_OP);
	RETURN NULL;
END $$;
CREATE TRIGGER big_statement AFTER UPDATE ON big
	FOR EACH STATEMENT EXECUTE FUNCTION big_statement();

INSERT INTO big (id, plain, note, v)
	SELECT i, 'value ' || i, md5(i::text), pgcrypt_at_rest.encrypt('value ' || i, 'ring')
	  FROM generate_series(1, 200000) i;

-- A partitioned table: two range partitions and one partitioned by hash.
CREATE TABLE parted (id int NOT NULL, plain text NOT NULL, v secret NOT NULL)
	PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (1) TO (3001);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (3001) TO (6001);
CREATE TABLE parted_3 PARTITION OF parted FOR VALUES FROM (6001) TO (9001)
	PARTITION BY HASH (id);
CREATE TABLE parted_3a PARTITION OF parted_3 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE parted_3b PARTITION OF parted_3 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO parted
	SELECT i, 'part ' || i, pgcrypt_at_rest.encrypt('part ' || i, 'ring')
	  FROM generate_series(1, 9000) i;

-- Inheritance: a parent with rows of its own and a child with another
-- encrypted column, of a domain over a domain.
CREATE TABLE inh_parent (id int NOT NULL, plain text NOT NULL,
                         v pgcrypt_at_rest.encrypted);
CREATE TABLE inh_child (w secret_nested) INHERITS (inh_parent);
INSERT INTO inh_parent
	SELECT i, 'parent ' || i, pgcrypt_at_rest.encrypt('parent ' || i, 'ring')
	  FROM generate_series(1, 2000) i;
INSERT INTO inh_child
	SELECT i, 'child ' || i, pgcrypt_at_rest.encrypt('child ' || i, 'ring'),
	       pgcrypt_at_rest.encrypt('child w ' || i, 'ring')
	  FROM generate_series(2001, 5000) i;

-- Values bound to a context from the row, under another keyring.
CREATE TABLE ctx_secrets (id int PRIMARY KEY, plain text NOT NULL,
                          v pgcrypt_at_rest.encrypted NOT NULL);
INSERT INTO ctx_secrets
	SELECT i, 'ctx ' || i,
	       pgcrypt_at_rest.encrypt('ctx ' || i, 'ctxring', pg_catalog.int4send(i))
	  FROM generate_series(1, 1000) i;

-- Copies of old ciphertexts the worker does not see: bytea, not encrypted.
CREATE TABLE saved (id int PRIMARY KEY, old bytea NOT NULL);
INSERT INTO saved SELECT id, v::bytea FROM big WHERE id <= 10;
});

# What the other columns hold, to compare after the drain.
my $others_sql = q{
SELECT count(*), md5(string_agg(id || '/' || plain || '/' || note || '/' || updated_at,
                                ',' ORDER BY id))
  FROM big};
my $others_before = $node->safe_psql('postgres', $others_sql);

# Every value, per table and column: (values, under the key, decrypting to the original).
my $check_sql = q{
SELECT 'big', count(*),
       count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = :key),
       count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = plain)
  FROM big
UNION ALL
SELECT 'parted', count(*),
       count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = :key),
       count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = plain)
  FROM parted
UNION ALL
SELECT 'inh_parent', count(*),
       count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = :key),
       count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v) = plain)
  FROM inh_parent
UNION ALL
SELECT 'inh_child.w', count(*),
       count(*) FILTER (WHERE pgcrypt_at_rest.key_id(w) = :key),
       count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(w) = 'child w ' || id)
  FROM inh_child};
sub check_values
{
	my ($key) = @_;
	(my $sql = $check_sql) =~ s/:key/$key/g;
	return $node->safe_psql('postgres', $sql);
}
my $expected_under = sub {
	my ($mode) = @_;    # 'all' or 'none'
	my %n = (big => 200000, parted => 9000, inh_parent => 5000, 'inh_child.w' => 3000);
	return join("\n",
		map { "$_|$n{$_}|" . ($mode eq 'all' ? $n{$_} : 0) . "|$n{$_}" }
		  ('big', 'parted', 'inh_parent', 'inh_child.w'));
};

is(check_values($key_a), $expected_under->('all'),
	'before rotation: every value is under the first key and decrypts');
is( $node->safe_psql('postgres',
		'SELECT pgcrypt_at_rest.decrypt_text(old::pgcrypt_at_rest.encrypted) FROM saved WHERE id = 1'),
	'value 1',
	'before rotation: the saved copy of an old ciphertext decrypts');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pgcrypt_at_rest.keys WHERE status <> 'active'"),
	'0', 'before rotation: no key is deprecated');

##############################################################################
# Rotate both keyrings; the worker drains "ring" and destroys its old key.
##############################################################################

my $rotated = $node->safe_psql(
	'postgres', q{
SELECT pgcrypt_at_rest.rotate_keyring('ring') || ',' || pgcrypt_at_rest.rotate_keyring('ctxring')});
my ($key_b, $key_d) = split /,/, $rotated;
isnt($key_b, $key_a, 'rotate_keyring made a new key for "ring"');
isnt($key_d, $key_c, 'rotate_keyring made a new key for "ctxring"');

ok( wait_for(
		$node, 'postgres',
		"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $key_a",
		'destroyed', 120, "key $key_a to be destroyed"),
	'the worker drained "ring" and destroyed its old key');

is(check_values($key_b), $expected_under->('all'),
	'every value (big table, partitions, sub-partitions, inheritance parent and child, domain columns) is under the new key and decrypts to the original'
);
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM (
	SELECT v FROM big UNION ALL SELECT v FROM parted UNION ALL SELECT v FROM inh_parent
	UNION ALL SELECT w FROM inh_child) s(v)
 WHERE pgcrypt_at_rest.key_id(v) = $key_a}),
	'0', 'no value is left under the old key');

is( $node->safe_psql(
		'postgres', qq{
SELECT status, sealed_copies, destroyed_at IS NOT NULL, drained_at IS NOT NULL
  FROM pgcrypt_at_rest.keys WHERE key_id = $key_a}),
	'destroyed|0|t|t',
	'the old key is destroyed, with no sealed copy left');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pgcrypt_at_rest.sealed_key WHERE key_id = $key_a"),
	'0', 'sealed_key holds no copy of the old key');
is( $node->safe_psql(
		'postgres', qq{
SELECT key_id, status, sealed_copies FROM pgcrypt_at_rest.keys
 WHERE keyring = 'ring' ORDER BY generation}),
	"$key_a|destroyed|0\n$key_b|active|1",
	'the new key is active and kept its copy');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pgcrypt_at_rest.rotation_status WHERE key_id = $key_a"),
	'0', 'rotation_status no longer lists the destroyed key');
ok($node->log_contains(qr/pgcrypt_at_rest destroyed key $key_a\b/),
	'the destruction is logged');

# The saved old ciphertext can no longer be decrypted.
{
	my ($stdout, $stderr) = ('', '');
	my $ret = $node->psql(
		'postgres',
		"\\set VERBOSITY verbose\nSELECT pgcrypt_at_rest.decrypt_text(old::pgcrypt_at_rest.encrypted) FROM saved WHERE id = 1",
		stdout => \$stdout,
		stderr => \$stderr);
	isnt($ret, 0, 'decrypting a saved copy of an old ciphertext fails');
	like(
		$stderr,
		qr/ERROR:  55000: key $key_a of keyring "ring" was destroyed/,
		'the error is SQLSTATE 55000 "key N of keyring "ring" was destroyed"');
	unlike($stdout, qr/value 1/, 'no plaintext is returned');
}

# The worker is not the application: no trigger fired, nothing else changed.
is($node->safe_psql('postgres', 'SELECT count(*) FROM audit'),
	'0', 'no user trigger (BEFORE, AFTER, statement) fired during the drain');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM big WHERE updated_at <> '2000-01-01 00:00:00+00'"),
	'0', 'updated_at, set by the BEFORE UPDATE trigger, is unchanged everywhere');
is($node->safe_psql('postgres', $others_sql),
	$others_before, 'every other column of the big table is unchanged');

# Control: the triggers do fire for an ordinary update.
$node->safe_psql('postgres', "UPDATE big SET note = note WHERE id = 1");
is($node->safe_psql('postgres', 'SELECT count(*) FROM audit'),
	'3', 'control: an ordinary UPDATE fires the three triggers');

##############################################################################
# Values with a context: not rotatable until the column declares it.
##############################################################################

ok( wait_for(
		$node, 'postgres', qq{
SELECT table_name::text, column_name, unrotatable > 0,
       unrotatable_reason LIKE '%set_column_context%'
  FROM pgcrypt_at_rest.rotation_status WHERE key_id = $key_c},
		'ctx_secrets|v|t|t', 60, 'rotation_status to show the unrotatable values'),
	'rotation_status shows values without a declared context as unrotatable, with a reason naming set_column_context()'
);
is( $node->safe_psql(
		'postgres', qq{
SELECT status, sealed_copies, drained_at IS NULL FROM pgcrypt_at_rest.keys WHERE key_id = $key_c}),
	'deprecated|1|t',
	'the key of the context-bound values is not drained nor destroyed');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $key_c),
       count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v, pg_catalog.int4send(id)) = plain)
  FROM ctx_secrets}),
	'1000|1000',
	'the context-bound values are still under their old key and decrypt');

# Three more naps change nothing.
sleep(3);
is( $node->safe_psql('postgres',
		"SELECT status, drained_at IS NULL FROM pgcrypt_at_rest.keys WHERE key_id = $key_c"),
	'deprecated|t', 'three naps later the key is still not destroyed');

$node->safe_psql('postgres',
	"SELECT pgcrypt_at_rest.set_column_context('ctx_secrets', 'v', 'pg_catalog.int4send(id)')");
ok( wait_for(
		$node, 'postgres',
		"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $key_c",
		'destroyed', 60, "key $key_c to be destroyed"),
	'after set_column_context() the worker drains the column and destroys the key');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $key_d),
       count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(v, pg_catalog.int4send(id)) = plain)
  FROM ctx_secrets}),
	'1000|1000',
	'the context-bound values are under the new key and decrypt with their context');
{
	my ($stdout, $stderr) = ('', '');
	$node->psql('postgres',
		"SELECT pgcrypt_at_rest.decrypt_text(v, '\\x00000002'::bytea) FROM ctx_secrets WHERE id = 1",
		stdout => \$stdout, stderr => \$stderr);
	like($stderr, qr/could not decrypt/,
		'the re-encrypted value is still bound to its context (a wrong one fails)');
}
is( $node->safe_psql('postgres',
		"SELECT sealed_copies FROM pgcrypt_at_rest.keys WHERE key_id = $key_c"),
	'0', 'the destroyed context key has no sealed copy');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pgcrypt_at_rest.rotation_status'),
	'0', 'no deprecated key is left');

# The worker is still there after all this.
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'postgres'}),
	'1', 'the worker for "postgres" is still running');

##############################################################################
# Row-level security: rows the table's owner cannot see.
##############################################################################

# The worker reads the table's heap itself and never plans a query on it, so
# the owner's policies hide nothing from it: every row, hidden or not, is
# re-encrypted and the old key is destroyed.  The invariant, checked as a
# superuser (who sees every row): no value is left under a destroyed key.
my $key_s_old = $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('rlsring')");
$node->safe_psql(
	'postgres', q{
CREATE ROLE app_owner LOGIN;
CREATE TABLE rls_t (id int PRIMARY KEY, tag text NOT NULL, plain text NOT NULL,
                    v pgcrypt_at_rest.encrypted NOT NULL);
INSERT INTO rls_t
	SELECT i, CASE WHEN i % 2 = 0 THEN 'visible' ELSE 'hidden' END, 'rls ' || i,
	       pgcrypt_at_rest.encrypt('rls ' || i, 'rlsring')
	  FROM generate_series(1, 100) i;
ALTER TABLE rls_t OWNER TO app_owner;
ALTER TABLE rls_t ENABLE ROW LEVEL SECURITY;
ALTER TABLE rls_t FORCE ROW LEVEL SECURITY;
CREATE POLICY only_visible ON rls_t USING (tag = 'visible');
});
my $key_s =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.rotate_keyring('rlsring')");
ok( wait_for(
		$node, 'postgres', qq{
SELECT count(*) FROM rls_t
 WHERE pgcrypt_at_rest.key_id(v) = $key_s AND pgcrypt_at_rest.decrypt_text(v) = plain},
		'100', 60, 'every row, hidden from the owner or not, to be re-encrypted'),
	'RLS: the rows hidden from the owner are re-encrypted too');
ok( wait_for(
		$node, 'postgres',
		"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $key_s_old",
		'destroyed', 60, 'the old key to be destroyed'),
	'RLS: the old key is destroyed once every row is re-encrypted');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM rls_t t
  JOIN pgcrypt_at_rest.keys k ON k.key_id = pgcrypt_at_rest.key_id(t.v)
 WHERE k.status = 'destroyed'}),
	'0',
	'RLS: no row hidden from the owner is left under a destroyed key');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM rls_t WHERE pgcrypt_at_rest.decrypt_text(v) = plain}),
	'100', 'RLS: every row still decrypts');

$node->stop;
done_testing();
