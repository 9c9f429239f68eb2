# Encrypted values leave no plaintext on disk: after inserting values whose
# plaintext carries a marker, checkpointing and switching WAL, no file under
# the data directory (heap, TOAST, indexes, WAL, everything) contains the
# marker, the server secret's hex or its raw bytes.  A positive control, a
# marker stored unencrypted, proves the scan reads the files that matter.

use strict;
use warnings;

use File::Find;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

# A random upper-case word, distinctive per run.
sub random_word
{
	my ($len) = @_;
	return join '', map { chr(ord('A') + ord($_) % 26) } split //,
	  random_bytes($len);
}

my $keyfile = write_secret_file(PostgreSQL::Test::Utils::tempdir . '/server.key');
(my $secret_hex = slurp_file($keyfile)) =~ s/\n\z//;
my $secret = pack('H*', $secret_hex);

# Each marker is sent to the server only as two halves concatenated by SQL,
# so the whole marker exists only in values the server builds.
my ($secret_a, $secret_b) = ('SEC' . random_word(8), random_word(8) . 'RET');
my $marker = $secret_a . $secret_b;
my ($control_a, $control_b) = ('CTL' . random_word(8), random_word(8) . 'PLN');
my $control = $control_a . $control_b;

my ($node) = preloaded_node('main', keyfile => $keyfile);
$node->start;

my $datadir = $node->data_dir;
ok(index($keyfile, "$datadir/") != 0, 'the key file is outside the data directory');

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
CREATE TABLE secrets (id int PRIMARY KEY, v pgcrypt_at_rest.encrypted);
CREATE TABLE control (id int PRIMARY KEY, t text);
});

# Separate transactions from the CREATE TABLEs, so the rows are WAL-logged
# even with wal_level = minimal.  Short values stay inline; long ones (the
# marker repeated) go to TOAST; some are bytea and some bound to a context.
$node->safe_psql(
	'postgres', qq{
INSERT INTO secrets
	SELECT i, pgcrypt_at_rest.encrypt('$secret_a' || '$secret_b' || '-' || i, 'ring')
	  FROM generate_series(1, 2000) i;
INSERT INTO secrets
	SELECT i, pgcrypt_at_rest.encrypt(repeat('$secret_a' || '$secret_b' || ' ', 400), 'ring')
	  FROM generate_series(2001, 2050) i;
INSERT INTO secrets
	SELECT i, pgcrypt_at_rest.encrypt(convert_to('$secret_a' || '$secret_b' || '/' || i, 'UTF8'),
	                                  'ring', convert_to('ctx' || i, 'UTF8'))
	  FROM generate_series(2051, 2100) i;
INSERT INTO control
	SELECT i, '$control_a' || '$control_b' || '-' || i
	  FROM generate_series(1, 100) i;
});

# The values are really there and decrypt to the marked plaintext.
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FILTER (WHERE id <= 2050
                          AND strpos(pgcrypt_at_rest.decrypt_text(v), '$secret_a' || '$secret_b') = 1),
       count(*) FILTER (WHERE id > 2050
                          AND pgcrypt_at_rest.decrypt(v, convert_to('ctx' || id, 'UTF8'))
                              = convert_to('$secret_a' || '$secret_b' || '/' || id, 'UTF8')),
       count(*) FILTER (WHERE strpos(v::text, '$secret_a') = 0)
  FROM secrets}),
	'2050|50|2100',
	'all encrypted values decrypt to the marked plaintext');
cmp_ok(
	$node->safe_psql(
		'postgres',
		"SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'secrets'"
	),
	'>', 0,
	'the long values are stored in the TOAST table');

# Returns { needle name => [ files containing it ] } for every regular file
# under $dir, read in binary.  Files that vanish while scanning are skipped.
sub scan_dir
{
	my ($dir, %needles) = @_;
	my %found = map { $_ => [] } keys %needles;
	my ($files, $bytes) = (0, 0);
	find(
		{
			no_chdir => 1,
			wanted => sub {
				my $path = $File::Find::name;
				return unless -f $path;
				open(my $fh, '<:raw', $path) or do {
					return if !-e $path;
					die "could not open \"$path\": $!";
				};
				local $/;
				my $content = <$fh>;
				close $fh;
				$content //= '';
				$files++;
				$bytes += length $content;
				my $rel = substr($path, length($dir) + 1);
				for my $name (keys %needles)
				{
					push @{ $found{$name} }, $rel
					  if index($content, $needles{$name}) >= 0;
				}
			}
		},
		$dir);
	return (\%found, $files, $bytes);
}

my %needles = (
	'plaintext marker' => $marker,
	'secret hex' => $secret_hex,
	'secret hex, upper case' => uc $secret_hex,
	'secret bytes' => $secret,
	'control marker' => $control);

sub check_scan
{
	my ($when, $found, $files, $bytes) = @_;
	note "$when: scanned $files files, $bytes bytes";
	cmp_ok($files, '>', 100, "$when: the scan read many files");
	for my $name (sort keys %needles)
	{
		next if $name eq 'control marker';
		is_deeply($found->{$name}, [], "$when: no file contains the $name");
	}
	note "$when: control marker found in: @{ $found->{'control marker'} }";
	return;
}

# While the server runs and before any checkpoint, the rows are in WAL.
my ($found, $files, $bytes) = scan_dir($datadir, %needles);
check_scan('before checkpoint', $found, $files, $bytes);
ok( (grep { m{^pg_wal/} } @{ $found->{'control marker'} }),
	'before checkpoint: the unencrypted control marker is found in WAL');

$node->safe_psql('postgres', 'CHECKPOINT; SELECT pg_switch_wal(); CHECKPOINT;');
$node->stop;

# After a checkpoint and a clean shutdown every page is on disk.
($found, $files, $bytes) = scan_dir($datadir, %needles);
check_scan('after checkpoint and shutdown', $found, $files, $bytes);
ok( (grep { m{^base/} } @{ $found->{'control marker'} }),
	'after shutdown: the unencrypted control marker is found in a heap file');

# The server log (outside the data directory) has no plaintext either.
my $log = slurp_file($node->logfile);
is(index($log, $marker), -1, 'the server log does not contain the plaintext marker');
is(index($log, $secret_hex), -1, 'the server log does not contain the secret');

done_testing();
