# After a server leaves, the most sensitive data is re-encrypted first.  Two
# keyrings rotated together: the one with the higher drain priority
# (alter_keyring(name, priority => n)) drains in a pass of its own, before
# the pass over the other one begins; rotation_status shows that order.  A
# key of the higher priority whose values cannot be re-encrypted does not
# hold back the lower one.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($node) = preloaded_node(
	'main', conf => q{
pgcrypt_at_rest.worker_naptime = '1s'
pgcrypt_at_rest.destroy_grace = '1d'
pgcrypt_at_rest.rotation_batch_size = 200
pgcrypt_at_rest.rotation_delay = '50ms'
pgcrypt_at_rest.worker_enabled = off
});
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('bulk');
SELECT pgcrypt_at_rest.create_keyring('sensitive');
SELECT pgcrypt_at_rest.alter_keyring('sensitive', priority => 10);
-- the table of the less sensitive data comes first in the pass order
CREATE TABLE bulk_rows AS SELECT i AS id, pgcrypt_at_rest.encrypt('b' || i, 'bulk') AS v FROM generate_series(1, 2000) i;
CREATE TABLE sensitive_rows AS SELECT i AS id, pgcrypt_at_rest.encrypt('s' || i, 'sensitive') AS v FROM generate_series(1, 2000) i;
-- and one value of the sensitive keyring that will never re-encrypt (no context declared)
INSERT INTO sensitive_rows VALUES (0, pgcrypt_at_rest.encrypt('bound', 'sensitive', '\x01'));
});
my ($bulk_old, $sensitive_old) = split /\|/, $node->safe_psql('postgres',
	q{SELECT (SELECT active_key_id FROM pgcrypt_at_rest.keyrings WHERE name = 'bulk'),
	         (SELECT active_key_id FROM pgcrypt_at_rest.keyrings WHERE name = 'sensitive')});
$node->safe_psql('postgres', q{SELECT pgcrypt_at_rest.rotate_keyring('bulk'), pgcrypt_at_rest.rotate_keyring('sensitive')});

is( $node->safe_psql('postgres',
		qq{SELECT string_agg(DISTINCT keyring || ':' || drain_order, ',' ORDER BY keyring || ':' || drain_order)
		     FROM pgcrypt_at_rest.rotation_status}),
	'bulk:2,sensitive:1', 'rotation_status: the sensitive keyring\'s key drains first');

$node->append_conf('postgresql.conf', 'pgcrypt_at_rest.worker_enabled = on');
$node->reload;

ok( wait_for(
		$node, 'postgres',
		qq{SELECT count(*) FILTER (WHERE pgcrypt_at_rest.key_id(v) = $bulk_old) FROM bulk_rows},
		'0', 120, 'the bulk keyring drained'),
	'both keyrings drain, the less sensitive too, though one sensitive value never re-encrypts');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM sensitive_rows WHERE pgcrypt_at_rest.key_id(v) = $sensitive_old}),
	'1', 'only the value bound to an undeclared context is left under the old sensitive key');

# Each pass's rows of rotation_progress are made when it starts: the bulk
# key's pass started after the last batch of the sensitive key's pass.
is( $node->safe_psql('postgres', qq{
SELECT (SELECT min(started_at) FROM pgcrypt_at_rest.rotation_progress WHERE key_id = $bulk_old)
    >= (SELECT max(last_batch_at) FROM pgcrypt_at_rest.rotation_progress WHERE key_id = $sensitive_old)}),
	't', 'the bulk keyring\'s pass began after the sensitive keyring\'s pass had re-encrypted everything it could');

$node->stop;
done_testing();
