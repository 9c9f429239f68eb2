# The server log records bind parameters in full under PostgreSQL's defaults
# as soon as statements are logged, and a parameter of encrypt() is
# plaintext.  The launcher warns at start, and again after a reload, while
# that is so; with log_parameter_max_length = 0 and
# log_parameter_max_length_on_error = 0 it says nothing.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

my $warning = qr/pgcrypt_at_rest: the server log records bind parameters/;

# Waits up to 60 s for the log, from byte $offset on, to match $regex.
sub log_shows
{
	my ($node, $offset, $regex) = @_;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		return 1 if substr(slurp_file($node->logfile), $offset) =~ $regex;
		sleep 1;
	}
	return 0;
}

my ($node) = preloaded_node('main', conf => "log_statement = 'mod'\n");
$node->start;
ok(log_shows($node, 0, $warning), 'log_statement = mod with parameters logged: warned at start');
my $log = slurp_file($node->logfile);
like($log, qr/HINT:  Set log_parameter_max_length = 0 and log_parameter_max_length_on_error = 0/,
	'the hint names the settings to use');
is(scalar(() = $log =~ /$warning/g), 1, 'warned once');

# the recommended settings: no warning at the next start
$node->append_conf('postgresql.conf',
	"log_parameter_max_length = 0\nlog_parameter_max_length_on_error = 0\n");
my $offset = -s $node->logfile;
$node->restart;
ok( wait_for(
		$node, 'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcrypt_at_rest launcher'",
		'1', 60, 'the launcher after the restart'),
	'the launcher is running again');
# the launcher warns before it first looks for databases: once a worker for
# "postgres" exists, its start is past
$node->safe_psql('postgres', 'CREATE EXTENSION pgcrypt_at_rest');
ok( wait_for(
		$node, 'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcrypt_at_rest worker'",
		'1', 60, 'a worker'),
	'a worker started after the launcher had checked the settings');
unlike(substr(slurp_file($node->logfile), $offset), $warning,
	'parameters not logged: no warning');

# a reload that logs parameters on error warns again
$offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "log_parameter_max_length_on_error = -1\n");
$node->reload;
ok(log_shows($node, $offset, $warning),
	'log_parameter_max_length_on_error = -1 after a reload: warned');
like(substr(slurp_file($node->logfile), $offset),
	qr/log_parameter_max_length_on_error is not 0/, 'the detail says which setting');

$node->stop;
done_testing();
