# Whose rights the table owner's code runs with during rotation.
#
# An ordinary role "tenant" owns a table whose every hook calls a recorder:
# an index expression, a partial-index predicate, an extended-statistics
# expression, a CHECK constraint, a domain over encrypted, a domain over that
# domain, a domain over encrypted[], a stored generated column, row-level
# security policies (forced) and the column's declared context expression;
# and its own BEFORE UPDATE trigger and ON UPDATE rule.  The recorder is an
# IMMUTABLE plpgsql function that logs (kind, current_user, superuser?,
# session_replication_role, search_path) and, whenever it finds itself
# running as a superuser, makes tenant a superuser.
#
# Rotated by the worker, then by drain() and destroy_drained_keys() from a
# superuser session in replica mode, every call the rotation caused ran as
# tenant, not a superuser, in origin mode; the hooks a row rewrite must run
# did run; RLS policies, statistics expressions, the table's triggers and
# rules did not; tenant is still no superuser; every value decrypts to its
# original under the new key.
#
# Last, tenant's index expressions try to write rows into another role's
# table that its foreign key or guard trigger refuse (which replica mode
# would have let through): nothing gets through, rotation_status shows the
# error on those tables, their key stays alive, and the keyring's other
# tables are drained all the same.
#
# Planning a query on tenant's table as a superuser folds the IMMUTABLE
# calls with constant arguments in its index expressions, predicates and
# statistics expressions: that is PostgreSQL's own behaviour for any
# superuser query, not the extension's.  So the test's own checking queries
# set pcar_test.observer, which the recorder obeys by doing nothing; the
# worker and the drain() session never set it.

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
pgcrypt_at_rest.rotation_batch_size = 8
autovacuum = off
});
$node->start;

my $rows = 20;       # rows of m.t
my $vrows = 5;       # rows of m.t2, m.t3 and m.ok

# A superuser session that makes the recorder a no-op: for checking only.
sub observe
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', "SET pcar_test.observer = on;\n$sql");
}

sub as_role
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $role ]);
}

# psql as $role, returning (exit code, stdout, stderr) without dying.
sub try_as_role
{
	my ($role, $sql) = @_;
	my ($stdout, $stderr) = ('', '');
	my $ret = $node->psql(
		'postgres', $sql,
		stdout => \$stdout,
		stderr => \$stderr,
		extra_params => [ '-U', $role ]);
	return ($ret, $stdout, $stderr);
}

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
CREATE ROLE tenant LOGIN;
CREATE ROLE victim_owner LOGIN;
CREATE SCHEMA m AUTHORIZATION tenant;
CREATE SCHEMA v AUTHORIZATION victim_owner;
GRANT EXECUTE ON FUNCTION pgcrypt_at_rest.encrypt(text, text),
                          pgcrypt_at_rest.encrypt(text, text, bytea)
      TO tenant;
});
my $key_a =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('ring')");
my $key_v =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.create_keyring('vring')");

is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'tenant'"),
	'f', 'tenant starts as an ordinary role');

##############################################################################
# tenant's table, created by tenant itself, with its code everywhere.
##############################################################################

as_role(
	'tenant', q{
CREATE TABLE m.calls (
	n bigserial PRIMARY KEY,
	kind text NOT NULL,
	cur_user name DEFAULT current_user,
	sess_user name DEFAULT session_user,
	srr text DEFAULT current_setting('session_replication_role'),
	path text DEFAULT current_setting('search_path'),
	is_super boolean);

-- Logs one call; and if it runs as a superuser, makes tenant one.
CREATE FUNCTION m.note(kind text) RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	su boolean;
BEGIN
	IF current_setting('pcar_test.observer', true) = 'on' THEN
		RETURN;
	END IF;
	SELECT r.rolsuper INTO su FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
	INSERT INTO m.calls (kind, cur_user, sess_user, srr, path, is_super)
	VALUES (kind, current_user, session_user,
	        pg_catalog.current_setting('session_replication_role'),
	        pg_catalog.current_setting('search_path'), su);
	IF su THEN
		EXECUTE 'ALTER ROLE tenant SUPERUSER';
	END IF;
END $$;

-- The recorder, IMMUTABLE so that it may sit in indexes, constraints,
-- domains, generated columns and statistics.
CREATE FUNCTION m.rec(kind text, x anyelement) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	PERFORM m.note(kind);
	RETURN true;
END $$;

CREATE FUNCTION m.ctx(id integer) RETURNS bytea LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	PERFORM m.note('context expr');
	RETURN pg_catalog.int4send(id);
END $$;

CREATE DOMAIN m.enc_inner AS pgcrypt_at_rest.encrypted
	CHECK (m.rec('domain inner', VALUE));
CREATE DOMAIN m.enc_outer AS m.enc_inner
	CHECK (m.rec('domain nested', VALUE));
CREATE DOMAIN m.enc_list AS pgcrypt_at_rest.encrypted[]
	CHECK (m.rec('domain array', VALUE));

CREATE TABLE m.t (
	id integer PRIMARY KEY,
	secret pgcrypt_at_rest.encrypted NOT NULL,
	secret_dom m.enc_inner,
	secret_nested m.enc_outer,
	secret_list m.enc_list,
	gen boolean GENERATED ALWAYS AS (m.rec('generated', secret)) STORED,
	CONSTRAINT t_check CHECK (m.rec('check', secret)));

-- Per row (the argument is the column) and, for what planning folds,
-- with constant arguments.
CREATE INDEX t_expr ON m.t
	((m.rec('index expr', secret) AND m.rec('index expr (constant arguments)', 0)));
CREATE INDEX t_partial ON m.t (id)
	WHERE m.rec('partial pred', secret) AND m.rec('partial pred (constant arguments)', 0);
CREATE STATISTICS m.t_stats ON
	(m.rec('stats expr', secret) AND m.rec('stats expr (constant arguments)', 0)), id
	FROM m.t;

CREATE FUNCTION m.own_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM m.note('own trigger');
	RETURN NEW;
END $$;
CREATE TRIGGER t_before_update BEFORE UPDATE ON m.t
	FOR EACH ROW EXECUTE FUNCTION m.own_trigger();
CREATE RULE t_rule AS ON UPDATE TO m.t
	DO ALSO INSERT INTO m.calls (kind) VALUES ('own rule');
});

as_role(
	'tenant', qq{
INSERT INTO m.t (id, secret, secret_dom, secret_nested, secret_list)
	SELECT i,
	       pgcrypt_at_rest.encrypt('s' || i, 'ring', m.ctx(i)),
	       pgcrypt_at_rest.encrypt('d' || i, 'ring'),
	       pgcrypt_at_rest.encrypt('n' || i, 'ring'),
	       ARRAY[pgcrypt_at_rest.encrypt('la' || i, 'ring'),
	             pgcrypt_at_rest.encrypt('lb' || i, 'ring')]
	  FROM generate_series(1, $rows) i;
SELECT pgcrypt_at_rest.set_column_context('m.t', 'secret', 'm.ctx(id)');
ALTER TABLE m.t ENABLE ROW LEVEL SECURITY;
ALTER TABLE m.t FORCE ROW LEVEL SECURITY;
CREATE POLICY t_policy ON m.t USING (m.rec('rls policy', secret));
ANALYZE m.t;
SELECT count(*) FROM m.t;
});

# Before any rotation the recorder does fire, as tenant, for every hook.
my @must_run = (
	'index expr', 'partial pred', 'check', 'domain inner',
	'domain nested', 'domain array', 'generated', 'context expr');
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(k, ',' ORDER BY k)
  FROM unnest(ARRAY['index expr', 'partial pred', 'check', 'domain inner',
                    'domain nested', 'domain array', 'generated', 'context expr',
                    'rls policy', 'stats expr']) k
 WHERE NOT EXISTS (SELECT FROM m.calls c
                    WHERE c.kind = k AND c.cur_user = 'tenant' AND NOT c.is_super)}),
	'',
	'control: while tenant set its table up, every recorder fired as tenant (RLS policy and statistics expression included)'
);

##############################################################################
# The victims: another role's tables, a foreign key and a guard trigger.
##############################################################################

as_role(
	'victim_owner', q{
CREATE TABLE v.parent (id integer PRIMARY KEY);
CREATE TABLE v.child (parent_id integer NOT NULL REFERENCES v.parent, note text NOT NULL);
CREATE FUNCTION v.guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.note IS DISTINCT FROM 'approved' THEN
		RAISE EXCEPTION 'guard: rows of v.child must be approved';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER child_guard BEFORE INSERT ON v.child
	FOR EACH ROW EXECUTE FUNCTION v.guard();
INSERT INTO v.parent VALUES (1);
INSERT INTO v.child VALUES (1, 'approved');
GRANT USAGE ON SCHEMA v TO tenant;
GRANT INSERT ON v.child TO tenant;
});

# tenant's tables whose index expressions, once they see a value under
# another key than vring's first (that is, during rotation), insert into
# v.child a row its foreign key refuses (m.t2) or its guard refuses (m.t3).
# m.ok is under the same keyring, with no code of tenant's.
as_role(
	'tenant', qq{
CREATE FUNCTION m.smuggle(p_parent integer, p_note text) RETURNS void
LANGUAGE plpgsql VOLATILE AS \$\$
BEGIN
	INSERT INTO v.child (parent_id, note) VALUES (p_parent, p_note);
END \$\$;
CREATE FUNCTION m.orphan_on_rotation(x pgcrypt_at_rest.encrypted) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS \$\$
BEGIN
	IF pgcrypt_at_rest.key_id(x) <> $key_v THEN
		PERFORM m.smuggle(999999, 'approved');
	END IF;
	RETURN true;
END \$\$;
CREATE FUNCTION m.forged_on_rotation(x pgcrypt_at_rest.encrypted) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS \$\$
BEGIN
	IF pgcrypt_at_rest.key_id(x) <> $key_v THEN
		PERFORM m.smuggle(1, 'forged');
	END IF;
	RETURN true;
END \$\$;
CREATE TABLE m.t2 (id integer PRIMARY KEY, secret pgcrypt_at_rest.encrypted NOT NULL);
CREATE INDEX t2_orphan ON m.t2 ((m.orphan_on_rotation(secret)));
CREATE TABLE m.t3 (id integer PRIMARY KEY, secret pgcrypt_at_rest.encrypted NOT NULL);
CREATE INDEX t3_forged ON m.t3 ((m.forged_on_rotation(secret)));
CREATE TABLE m.ok (id integer PRIMARY KEY, secret pgcrypt_at_rest.encrypted NOT NULL);
INSERT INTO m.t2 SELECT i, pgcrypt_at_rest.encrypt('t2 ' || i, 'vring') FROM generate_series(1, $vrows) i;
INSERT INTO m.t3 SELECT i, pgcrypt_at_rest.encrypt('t3 ' || i, 'vring') FROM generate_series(1, $vrows) i;
INSERT INTO m.ok SELECT i, pgcrypt_at_rest.encrypt('ok ' || i, 'vring') FROM generate_series(1, $vrows) i;
});

# Controls: the foreign key and the guard refuse tenant's rows in the normal
# mode, and replica mode lets an orphan through (which is why the owner's
# code must never run in it).
{
	my ($ret, $stdout, $stderr) =
	  try_as_role('tenant', "INSERT INTO v.child VALUES (999999, 'approved')");
	like($stderr, qr/violates foreign key constraint/,
		'control: v.child refuses an orphan row from tenant (foreign key)');
	($ret, $stdout, $stderr) =
	  try_as_role('tenant', "INSERT INTO v.child VALUES (1, 'forged')");
	like($stderr, qr/guard: rows of v\.child must be approved/,
		'control: v.child refuses an unapproved row from tenant (guard trigger)');
	is( $node->safe_psql(
			'postgres', q{
BEGIN;
SET LOCAL session_replication_role = replica;
INSERT INTO v.child VALUES (999999, 'forged');
SELECT count(*) FROM v.child c WHERE NOT EXISTS (SELECT FROM v.parent p WHERE p.id = c.parent_id);
ROLLBACK;}),
		'1',
		'control: in replica mode neither the foreign key nor the guard stops such a row');
}

##############################################################################
# Checks.
##############################################################################

# Every value of m.t: (rows, secret, secret_dom, secret_nested, both array
# elements) under $key and decrypting to the original.
sub values_under
{
	my ($key) = @_;
	return observe(qq{
SELECT count(*),
       count(*) FILTER (WHERE pgcrypt_at_rest.key_id(secret) = $key
                          AND pgcrypt_at_rest.decrypt_text(secret, pg_catalog.int4send(id)) = 's' || id),
       count(*) FILTER (WHERE pgcrypt_at_rest.key_id(secret_dom) = $key
                          AND pgcrypt_at_rest.decrypt_text(secret_dom) = 'd' || id),
       count(*) FILTER (WHERE pgcrypt_at_rest.key_id(secret_nested) = $key
                          AND pgcrypt_at_rest.decrypt_text(secret_nested) = 'n' || id),
       count(*) FILTER (WHERE array_length(secret_list, 1) = 2
                          AND pgcrypt_at_rest.key_id(secret_list[1]) = $key
                          AND pgcrypt_at_rest.key_id(secret_list[2]) = $key
                          AND pgcrypt_at_rest.decrypt_text(secret_list[1]) = 'la' || id
                          AND pgcrypt_at_rest.decrypt_text(secret_list[2]) = 'lb' || id)
  FROM m.t});
}
my $all_under = join('|', ($rows) x 5);

# What the rotation that just ran made the owner's code do.
sub check_calls
{
	my ($phase) = @_;

	note("$phase: calls logged:\n"
		  . $node->safe_psql(
			'postgres', q{
SELECT kind, cur_user, sess_user, srr, path, is_super, count(*)
  FROM m.calls GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6}));

	is( $node->safe_psql(
			'postgres', q{
SELECT coalesce(string_agg(DISTINCT kind || ' as ' || coalesce(cur_user::text, '?')
                           || ' superuser=' || coalesce(is_super::text, '?')
                           || ' in ' || coalesce(srr, '?'), '; '), '')
  FROM m.calls
 WHERE NOT (cur_user = 'tenant' AND is_super IS FALSE AND srr = 'origin')}),
		'',
		"$phase: every call of tenant's code ran as tenant, not as a superuser, with session_replication_role origin"
	);
	is( $node->safe_psql(
			'postgres', q{
SELECT coalesce(string_agg(DISTINCT kind || ' with ' || coalesce(path, '?'), '; '), '')
  FROM m.calls WHERE path IS DISTINCT FROM 'pg_catalog, pg_temp'}),
		'',
		"$phase: every call of tenant's code ran with search_path pinned to pg_catalog, pg_temp"
	);
	for my $kind (@must_run)
	{
		is( $node->safe_psql('postgres',
				"SELECT count(*) > 0 FROM m.calls WHERE kind = '$kind'"),
			't', "$phase: the $kind ran during rotation");
	}
	is( $node->safe_psql(
			'postgres', q{
SELECT count(*) FILTER (WHERE kind = 'domain inner') >= count(*) FILTER (WHERE kind = 'domain nested')
  FROM m.calls}),
		't',
		"$phase: the inner domain's check ran for the nested domain's values too");
	is( $node->safe_psql('postgres', "SELECT count(*) FROM m.calls WHERE kind = 'rls policy'"),
		'0', "$phase: the RLS policy did not run during rotation (not as tenant, not as anyone)");
	is( $node->safe_psql('postgres', "SELECT count(*) FROM m.calls WHERE kind LIKE 'stats expr%'"),
		'0',
		"$phase: the statistics expression (per row or with constant arguments) did not run during rotation"
	);
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM m.calls WHERE kind IN ('own trigger', 'own rule')"),
		'0', "$phase: the table's own BEFORE UPDATE trigger and ON UPDATE rule did not fire");
	is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'tenant'"),
		'f', "$phase: tenant is not a superuser");
}

is(values_under($key_a), $all_under,
	'before rotation: every value of m.t is under the first key and decrypts');

##############################################################################
# (a) The rotation worker.
##############################################################################

ok( wait_for(
		$node, 'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'postgres'},
		'1', 60, 'the worker'),
	'the worker for "postgres" is running');

$node->safe_psql('postgres', 'TRUNCATE m.calls');
my $key_b =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.rotate_keyring('ring')");

ok( wait_for(
		$node, 'postgres',
		"SELECT status FROM pgcrypt_at_rest.keys WHERE key_id = $key_a",
		'destroyed', 60, "key $key_a to be destroyed"),
	'worker: the old key of "ring" was drained and destroyed');
is(values_under($key_b), $all_under,
	'worker: every value of m.t (context-bound, domain, nested domain, array domain) is under the new key and decrypts to its original'
);
check_calls('worker');

##############################################################################
# (b) drain() and destroy_drained_keys() by a superuser in replica mode,
# with the worker paused.
##############################################################################

$node->safe_psql(
	'postgres', q{
ALTER SYSTEM SET pgcrypt_at_rest.worker_enabled = off;
SELECT pg_reload_conf();
});
ok( wait_for(
		$node, 'postgres', q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'pgcrypt_at_rest worker' AND datname = 'postgres'
   AND query = 'paused: pgcrypt_at_rest.worker_enabled is off'},
		'1', 60, 'the worker to pause'),
	'the worker is paused');

$node->safe_psql('postgres', 'TRUNCATE m.calls');
my $key_c =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.rotate_keyring('ring')");
is(values_under($key_b), $all_under,
	'drain(): after rotate_keyring, with the worker paused, the values are still under the previous key');

my $drained = $node->safe_psql(
	'postgres', q{
SET session_replication_role = replica;
SET search_path = m, public;
SELECT pgcrypt_at_rest.drain();
SELECT pgcrypt_at_rest.destroy_drained_keys();
SHOW session_replication_role;
SHOW search_path;
});
is( $drained,
	join("\n", 5 * $rows, "{$key_b}", 'replica', 'm, public'),
	'drain() in a superuser session in replica mode (search_path m, public) re-encrypted every value of m.t (5 a row), destroy_drained_keys() destroyed the old key, and the session kept its own settings'
);
is( $node->safe_psql('postgres',
		"SELECT status, sealed_copies FROM pgcrypt_at_rest.keys WHERE key_id = $key_b"),
	'destroyed|0', 'drain(): the old key is destroyed');
is(values_under($key_c), $all_under,
	'drain(): every value of m.t is under the new key and decrypts to its original');
check_calls('drain() in replica mode');

$node->safe_psql(
	'postgres', q{
ALTER SYSTEM RESET pgcrypt_at_rest.worker_enabled;
SELECT pg_reload_conf();
});

##############################################################################
# (c) Owner code that would write where replica mode skips the checks.
##############################################################################

$node->safe_psql('postgres', 'TRUNCATE m.calls');
my $key_w =
  $node->safe_psql('postgres', "SELECT pgcrypt_at_rest.rotate_keyring('vring')");

ok( wait_for(
		$node, 'postgres', qq{
SELECT count(*) FROM m.ok
 WHERE pgcrypt_at_rest.key_id(secret) = $key_w AND pgcrypt_at_rest.decrypt_text(secret) = 'ok ' || id},
		$vrows, 60, 'm.ok to be re-encrypted'),
	'victims: m.ok, under the same keyring, is re-encrypted all the same');
ok( wait_for(
		$node, 'postgres', qq{
SELECT count(*) FROM pgcrypt_at_rest.rotation_status
 WHERE key_id = $key_v AND table_name IN ('m.t2'::regclass, 'm.t3'::regclass)
   AND last_error IS NOT NULL AND counted_at > last_error_at AND remaining = $vrows},
		'2', 60, 'rotation_status to show the errors on m.t2 and m.t3 and a count after them'),
	'victims: rotation_status shows an error on m.t2 and on m.t3, and a count after it still finds their values'
);

like(
	$node->safe_psql('postgres',
		"SELECT last_error FROM pgcrypt_at_rest.rotation_status WHERE key_id = $key_v AND table_name = 'm.t2'::regclass"
	),
	qr/violates foreign key constraint/,
	"victims: m.t2's error is v.child's foreign key refusing the orphan row");
like(
	$node->safe_psql('postgres',
		"SELECT last_error FROM pgcrypt_at_rest.rotation_status WHERE key_id = $key_v AND table_name = 'm.t3'::regclass"
	),
	qr/guard: rows of v\.child must be approved/,
	"victims: m.t3's error is v.child's guard trigger refusing the row");

is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM v.child c WHERE NOT EXISTS (SELECT FROM v.parent p WHERE p.id = c.parent_id)}),
	'0', 'victims: no orphan row reached v.child');
is($node->safe_psql('postgres', "SELECT count(*) FROM v.child WHERE note <> 'approved'"),
	'0', 'victims: no row the guard refuses reached v.child');
is($node->safe_psql('postgres', 'SELECT count(*) FROM v.child'),
	'1', 'victims: v.child holds only its own row');

is( $node->safe_psql(
		'postgres', qq{
SELECT status, sealed_copies, drained_at IS NULL FROM pgcrypt_at_rest.keys WHERE key_id = $key_v}),
	'deprecated|1|t',
	"victims: vring's old key is kept (not drained, not destroyed, its sealed copy kept)");
is( $node->safe_psql(
		'postgres', qq{
SELECT (SELECT count(*) FROM m.t2
         WHERE pgcrypt_at_rest.key_id(secret) = $key_v AND pgcrypt_at_rest.decrypt_text(secret) = 't2 ' || id)
    || '|' ||
       (SELECT count(*) FROM m.t3
         WHERE pgcrypt_at_rest.key_id(secret) = $key_v AND pgcrypt_at_rest.decrypt_text(secret) = 't3 ' || id)}),
	"$vrows|$vrows",
	'victims: the values of m.t2 and m.t3 are still under the old key and decrypt');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'tenant'"),
	'f', 'victims: tenant is not a superuser');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM m.calls
 WHERE NOT (cur_user = 'tenant' AND is_super IS FALSE AND srr = 'origin')
    OR kind IN ('own trigger', 'own rule', 'rls policy') OR kind LIKE 'stats expr%'}),
	'0',
	"victims: meanwhile nothing of tenant's ran but as tenant in origin mode, and no trigger, rule, policy or statistics expression"
);

##############################################################################
# Control: tenant's own trigger and rule do fire on an ordinary UPDATE.
##############################################################################

$node->safe_psql('postgres', 'TRUNCATE m.calls');
as_role('tenant', 'UPDATE m.t SET secret = secret WHERE id = 1');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FILTER (WHERE kind = 'own trigger') > 0,
       count(*) FILTER (WHERE kind = 'own rule') > 0,
       count(*) FILTER (WHERE kind = 'rls policy') > 0
  FROM m.calls}),
	't|t|t',
	'control: an ordinary UPDATE by tenant fires its trigger, its rule and its RLS policy');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'tenant'"),
	'f', 'at the end tenant is still not a superuser');

$node->stop;
done_testing();
