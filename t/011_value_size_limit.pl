# Every way in (encrypt(), the bytea cast, binary receive, text input) takes
# values up to the same bound, PCAR_MAX_VALUE_BYTES in src/ciphertext.h, so
# that any stored value has a text form that fits in one COPY row: a value at
# the bound survives COPY TO, pg_dump and a psql restore, and one byte more
# is refused with 54000 on every way in.
#
# Each giant value costs about 1 GB of memory in a backend and up to 1 GB of
# disk per file, so there are few of them, and they are dropped (tables) and
# deleted (files) as soon as they have been checked.

use strict;
use warnings;

use Digest::MD5;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use PcarTestUtils;

# src/ciphertext.h
my $max_alloc = 0x3fffffff;                                  # MaxAllocSize
my $max_text = $max_alloc - 1024 * 1024;                     # PCAR_MAX_TEXT_BYTES
my $max_value = int(($max_text - 5) / 4) * 3;                # PCAR_MAX_VALUE_BYTES
my $overhead = 5 + 24 + 16;                                  # PCAR_OVERHEAD
my $max_plain = $max_value - $overhead;                      # PCAR_MAX_PLAINTEXT
my $b64_len = 4 * int(($max_value + 2) / 3);                 # base64 of a value at the bound

# the numbers src/ciphertext.h gives (MaxAllocSize - 1 MiB, base64 of 3 bytes in 4)
die "bound is $max_value" unless $max_value == 804519930 && $max_plain == 804519885;
die "text form is $b64_len" unless 4 + $b64_len + 1 <= $max_text;

# a backend holds up to about 4 GB at once (two or three copies of a giant
# value and its text form); the files, up to 1 GB each, exist one at a time
my $tempdir = PostgreSQL::Test::Utils::tempdir;
{
	my ($avail_kb) = (`df -Pk '$tempdir'` =~ /\n\S+\s+\d+\s+\d+\s+(\d+)/);
	plan skip_all => "needs 8 GB free on the disk of $tempdir, has "
	  . int(($avail_kb // 0) / 1024) . ' MB'
	  if !defined $avail_kb || $avail_kb < 8 * 1024 * 1024;
	my ($mem_kb) = (slurp_file('/proc/meminfo') =~ /^MemAvailable:\s+(\d+)/m);
	plan skip_all => 'needs 6 GB of available memory, has '
	  . int(($mem_kb // 0) / 1024) . ' MB'
	  if defined $mem_kb && $mem_kb < 6 * 1024 * 1024;
}

my $started = time();
my $last = $started;

# Notes how long each part took, to keep the whole test's runtime in view.
sub lap
{
	my ($what) = @_;
	my $now = time();
	note(sprintf('%-50s %6.1f s (total %6.1f s)', $what, $now - $last, $now - $started));
	$last = $now;
}

my ($node) = preloaded_node(
	'main', conf => q{
# the giant value is compared after the restore: no re-encryption meanwhile
pgcrypt_at_rest.worker_enabled = off
max_wal_size = '4GB'
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE big');
my $key = $node->safe_psql('big', q{
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('ring');
});

# Runs $sql in $db expecting it to fail; returns its stderr, with the SQLSTATE.
sub failure_of
{
	my ($db, $sql) = @_;
	my ($ret, $stdout, $stderr) =
	  $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	return $ret == 0 ? "unexpected success: $stdout" : $stderr;
}

###########################################################################
# 1. A value at the bound: stored, COPY TO, pg_dump, restore
###########################################################################

# md5 of repeat('x', $max_plain), computed here in pieces
my $plain_md5;
{
	my $md5 = Digest::MD5->new;
	my $mib = 'x' x (1024 * 1024);
	$md5->add($mib) for 1 .. int($max_plain / length($mib));
	$md5->add('x' x ($max_plain % length($mib)));
	$plain_md5 = $md5->hexdigest;
}
$node->safe_psql('big', qq{
CREATE TABLE giant (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO giant SELECT 1, pgcrypt_at_rest.encrypt(repeat('x', $max_plain), 'ring');
});
is( $node->safe_psql('big',
		'SELECT octet_length(v::bytea), pgcrypt_at_rest.key_id(v) FROM giant'),
	"$max_value|$key",
	"encrypt() of the largest plaintext ($max_plain bytes) makes a value at the bound");
lap('encrypt at the bound');

# COPY TO a file: one text row holding the whole value
my $copy_file = "$tempdir/giant.copy";
$node->safe_psql('big', "COPY giant TO '$copy_file'");
is(-s $copy_file, length("1\tenc:") + $b64_len + 1,
	'COPY TO writes the value at the bound as one text row');
{
	open(my $fh, '<:raw', $copy_file) or die "could not open $copy_file: $!";
	read($fh, my $start, 12);
	seek($fh, -1, 2);
	read($fh, my $end, 1);
	close $fh;
	# the first 6 base64 digits: the version byte and most of the key id
	my $header = substr(MIME::Base64::encode_base64(pack('CN', 1, $key), ''), 0, 6);
	is($start . $end, "1\tenc:$header\n", 'the row is the id and "enc:" then base64 of the header');
}
unlink $copy_file or die "could not remove $copy_file: $!";
lap('COPY TO');

# pg_dump in the plain format (COPY ... FROM stdin), restored with psql into
# another database of this server, which has the same secret
my $dump_file = "$tempdir/big.sql";
$node->command_ok([ 'pg_dump', '-Fp', '-f', $dump_file, '-d', $node->connstr('big') ],
	'pg_dump of a database holding a value at the bound');
cmp_ok(-s $dump_file, '>', $b64_len, 'the dump holds the value');
lap('pg_dump');

$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(
	[
		'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $dump_file,
		'-d', $node->connstr('restored')
	],
	'psql restores the dump');
unlink $dump_file or die "could not remove $dump_file: $!";
lap('restore with psql');

is( $node->safe_psql('restored',
		'SELECT id, octet_length(v::bytea), pgcrypt_at_rest.key_id(v) FROM giant'),
	"1|$max_value|$key", 'restored: one row, the value at the bound, same key');
is( $node->safe_psql('restored', 'SELECT md5(pgcrypt_at_rest.decrypt(v)) FROM giant'),
	$plain_md5, 'restored: the value decrypts to the original plaintext');
$node->safe_psql('postgres', 'DROP DATABASE restored');
lap('check the restore');

# binary COPY of a value at the bound, out and back in
my $bin_file = "$tempdir/giant.bin";
$node->safe_psql('big', "COPY giant TO '$bin_file' (FORMAT binary)");
is(-s $bin_file, 19 + 2 + 4 + 4 + 4 + $max_value + 2,
	'binary COPY TO writes the value at the bound');
$node->safe_psql('big', qq{
DROP TABLE giant;
CREATE TABLE giant_bin (id int, v pgcrypt_at_rest.encrypted);
COPY giant_bin FROM '$bin_file' (FORMAT binary);
});
unlink $bin_file or die "could not remove $bin_file: $!";
is( $node->safe_psql('big',
		'SELECT octet_length(v::bytea), md5(pgcrypt_at_rest.decrypt(v)) FROM giant_bin'),
	"$max_value|$plain_md5",
	'binary COPY FROM takes a value at the bound, and it decrypts');
$node->safe_psql('big', 'DROP TABLE giant_bin');
lap('binary COPY at the bound');

###########################################################################
# 2. One byte over the bound: refused with 54000 on every way in
###########################################################################

# encrypt(), text and bytea
like(
	failure_of('big', "SELECT pgcrypt_at_rest.encrypt(repeat('x', $max_plain + 1), 'ring') IS NULL"),
	qr/ERROR:  54000: value too long to encrypt\nDETAIL:  The value is ${\($max_plain + 1)} bytes; at most $max_plain can be encrypted\./,
	'encrypt(text) of one byte more than the largest plaintext: 54000');
like(
	failure_of('big',
		"SELECT pgcrypt_at_rest.encrypt(convert_to(repeat('x', $max_plain + 1), 'SQL_ASCII'), 'ring') IS NULL"),
	qr/ERROR:  54000: value too long to encrypt\nDETAIL:  The value is ${\($max_plain + 1)} bytes; at most $max_plain can be encrypted\./,
	'encrypt(bytea) of one byte more than the largest plaintext: 54000');
lap('encrypt over the bound');

# the bytea cast, with a valid header (version 1, key id 1): at the bound it
# is taken, one byte more is refused for its length alone
is( $node->safe_psql('big', qq{
SELECT octet_length(('\\x0100000001'::bytea || convert_to(repeat('x', $max_value - 5), 'SQL_ASCII'))
                    ::pgcrypt_at_rest.encrypted::bytea)}),
	$max_value, 'the bytea cast takes a value at the bound');
like(
	failure_of('big', qq{
SELECT ('\\x0100000001'::bytea || convert_to(repeat('x', $max_value - 4), 'SQL_ASCII'))
       ::pgcrypt_at_rest.encrypted IS NULL}),
	qr/ERROR:  54000: encrypted value too long\nDETAIL:  The value is ${\($max_value + 1)} bytes; at most $max_value are accepted\./,
	'the bytea cast of a value one byte over the bound: 54000');
# the length is checked before the layout
like(
	failure_of('big', qq{
SELECT convert_to(repeat('x', $max_value + 1), 'SQL_ASCII')::pgcrypt_at_rest.encrypted IS NULL}),
	qr/ERROR:  54000: encrypted value too long\nDETAIL:  The value is ${\($max_value + 1)} bytes; at most $max_value are accepted\./,
	'the bytea cast of bytes one over the bound and malformed too: 54000 first');
lap('bytea cast');

# Files for COPY FROM, written here: a value of $len bytes is a valid header
# (version 1, key id 1) and then 'x' bytes, written in pieces.
my $piece = 3 * 1024 * 1024;    # a multiple of 3: base64 pieces concatenate
my $header = "\x01\x00\x00\x00\x01";

sub write_value_pieces
{
	my ($fh, $len, $encode) = @_;
	my $full = $encode->('x' x $piece);
	for (my $done = 0; $done < $len; $done += $piece)
	{
		my $n = $len - $done < $piece ? $len - $done : $piece;
		print $fh $done == 0 ? $encode->($header . ('x' x ($n - 5)))
		  : $n == $piece ? $full
		  : $encode->('x' x $n)
		  or die "could not write: $!";
	}
}

# binary COPY: signature, flags, header extension; per tuple the field
# count, then each field's length and bytes; the trailer
sub write_binary_copy
{
	my ($path, $id, $len) = @_;
	open(my $fh, '>:raw', $path) or die "could not write $path: $!";
	print $fh "PGCOPY\n\377\r\n\0", pack('NN', 0, 0), pack('n', 2),
	  pack('NN', 4, $id), pack('N', $len);
	write_value_pieces($fh, $len, sub { $_[0] });
	print $fh pack('n', 0xffff);
	close $fh or die "could not close $path: $!";
}

# text COPY: the id, a tab, "enc:" and the base64 of the value on one line
sub write_text_copy
{
	my ($path, $id, $len) = @_;
	open(my $fh, '>:raw', $path) or die "could not write $path: $!";
	print $fh "$id\tenc:";
	write_value_pieces($fh, $len, sub { encode_base64($_[0], '') });
	print $fh "\n";
	close $fh or die "could not close $path: $!";
}

$node->safe_psql('big', 'CREATE TABLE loaded (id int, v pgcrypt_at_rest.encrypted)');

# the same writers make files that load when the value is small
my $small_bin = "$tempdir/small.bin";
my $small_txt = "$tempdir/small.copy";
write_binary_copy($small_bin, 1, 100);
write_text_copy($small_txt, 2, 100);
$node->safe_psql('big', "COPY loaded FROM '$small_bin' (FORMAT binary)");
$node->safe_psql('big', "COPY loaded FROM '$small_txt'");
is( $node->safe_psql('big',
		'SELECT id, octet_length(v::bytea), pgcrypt_at_rest.key_id(v) FROM loaded ORDER BY id'),
	"1|100|1\n2|100|1",
	'files written the same way load when the value is small');
unlink $small_bin, $small_txt;

# binary receive: one byte over the bound
my $over_bin = "$tempdir/over.bin";
write_binary_copy($over_bin, 3, $max_value + 1);
is(-s $over_bin, 19 + 2 + 4 + 4 + 4 + $max_value + 1 + 2, 'binary file over the bound written');
like(
	failure_of('big', "COPY loaded FROM '$over_bin' (FORMAT binary)"),
	qr/ERROR:  54000: encrypted value too long\nDETAIL:  The value is ${\($max_value + 1)} bytes; at most $max_value are accepted\./,
	'binary COPY FROM of a value one byte over the bound: 54000');
unlink $over_bin or die "could not remove $over_bin: $!";
lap('binary COPY over the bound');

# text input: the base64 of one byte over the bound
my $over_txt = "$tempdir/over.copy";
write_text_copy($over_txt, 4, $max_value + 1);
is(-s $over_txt, length("4\tenc:") + 4 * int(($max_value + 1 + 2) / 3) + 1,
	'text file over the bound written');
like(
	failure_of('big', "COPY loaded FROM '$over_txt'"),
	qr/ERROR:  54000: encrypted value too long\nDETAIL:  The value is \d+ bytes; at most $max_value are accepted\./,
	'text COPY FROM of a value one byte over the bound: 54000 (refused from the length of its base64)');
unlink $over_txt or die "could not remove $over_txt: $!";
lap('text COPY over the bound');

is($node->safe_psql('big', 'SELECT count(*) FROM loaded'),
	'2', 'nothing over the bound was stored');

$node->stop;
note(sprintf('total runtime %.1f s', time() - $started));

done_testing();
