--
-- encrypt() and decrypt(): round trips, contexts, NULLs, sizes
--
SELECT pgcrypt_at_rest.create_keyring('rt') > 0 AS created;

-- text and bytea round trips, including empty values and multibyte text
SELECT octet_length(t) AS bytes, pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt(t, 'rt')) = t AS text_ok,
	   pgcrypt_at_rest.decrypt(pgcrypt_at_rest.encrypt(t, 'rt')) = convert_to(t, 'UTF8') AS bytes_ok
  FROM (VALUES (''), ('a'), ('hello, world'), ('grüße, 東京, 🙂'), (repeat('long ', 1000))) AS v(t);
SELECT b, pgcrypt_at_rest.decrypt(pgcrypt_at_rest.encrypt(b, 'rt')) = b AS bytea_ok,
	   octet_length(pgcrypt_at_rest.encrypt(b, 'rt')::bytea) - octet_length(b) AS overhead
  FROM (VALUES (''::bytea), ('\x00'::bytea), ('\x00ff00ff'::bytea)) AS v(b);

-- every length across the short-value fast path (up to 192 bytes) and past
-- it: encrypt is libsodium's AEAD, so each round trip checks decrypt against it
CREATE TABLE sweep AS
	SELECT n, substring(decode(repeat(md5(n::text), 13), 'hex') from 1 for n) AS b,
		   CASE WHEN n % 2 = 1 THEN int4send(n) ELSE ''::bytea END AS ctx
	  FROM generate_series(0, 200) n;
ALTER TABLE sweep ADD COLUMN e bytea;
UPDATE sweep SET e = pgcrypt_at_rest.encrypt(b, 'rt', ctx)::bytea;
SELECT count(*) AS lengths,
	   count(*) FILTER (WHERE octet_length(b) = n) AS right_size,
	   count(*) FILTER (WHERE pgcrypt_at_rest.decrypt(e::pgcrypt_at_rest.encrypted, ctx) = b) AS round_trips
  FROM sweep;
-- and at every length a flipped tag, last ciphertext byte or context byte fails
SELECT count(*) FILTER (WHERE sqlstate_of(format('SELECT pgcrypt_at_rest.decrypt(%L::bytea::pgcrypt_at_rest.encrypted, %L::bytea)',
								set_byte(e, octet_length(e) - 1, get_byte(e, octet_length(e) - 1) # 128), ctx)) LIKE '22000%') AS bad_tag,
	   count(*) FILTER (WHERE n = 0 OR sqlstate_of(format('SELECT pgcrypt_at_rest.decrypt(%L::bytea::pgcrypt_at_rest.encrypted, %L::bytea)',
								set_byte(e, 28 + n, get_byte(e, 28 + n) # 1), ctx)) LIKE '22000%') AS bad_ciphertext,
	   count(*) FILTER (WHERE sqlstate_of(format('SELECT pgcrypt_at_rest.decrypt(%L::bytea::pgcrypt_at_rest.encrypted, %L::bytea)',
								e, ctx || '\x00'::bytea)) LIKE '22000%') AS bad_context
  FROM sweep;
DROP TABLE sweep;

-- a fresh nonce every call: the same plaintext never encrypts the same way
SELECT count(DISTINCT pgcrypt_at_rest.encrypt('same', 'rt')::bytea) AS distinct_values,
	   count(DISTINCT substring(pgcrypt_at_rest.encrypt('same', 'rt')::bytea from 6 for 24)) AS distinct_nonces
  FROM generate_series(1, 1000);

-- 1 MB values, text and bytea (random bytes, so no compression helps)
CREATE TABLE big AS
	SELECT repeat('0123456789abcdef', 65536) AS t,
		   (SELECT string_agg(sha256(int4send(i)), '') FROM generate_series(1, 32768) i) AS b;
SELECT octet_length(t) AS text_bytes, octet_length(b) AS bytea_bytes FROM big;
CREATE TABLE big_enc AS
	SELECT pgcrypt_at_rest.encrypt(t, 'rt') AS et, pgcrypt_at_rest.encrypt(b, 'rt') AS eb FROM big;
SELECT pgcrypt_at_rest.decrypt_text(et) = big.t AS big_text_ok,
	   pgcrypt_at_rest.decrypt(eb) = big.b AS big_bytea_ok,
	   octet_length(eb::bytea) = octet_length(big.b) + 45 AS big_overhead_ok,
	   pgcrypt_at_rest.decrypt_text(et::text::pgcrypt_at_rest.encrypted) = big.t AS big_text_form_ok
  FROM big_enc, big;
DROP TABLE big, big_enc;

-- context: bound as associated data, needed again to decrypt
SELECT pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('ctx', 'rt', '\x0102'::bytea), '\x0102'::bytea) AS with_context,
	   pgcrypt_at_rest.decrypt(pgcrypt_at_rest.encrypt('\xaa'::bytea, 'rt', 'row 7'::bytea), 'row 7'::bytea) AS bytea_with_context;
-- an empty context is the same as none
SELECT pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('e', 'rt', ''::bytea)) AS empty_context_1,
	   pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('e', 'rt'), ''::bytea) AS empty_context_2;

-- values bound to their row cannot be swapped between rows
CREATE TABLE accounts (id int PRIMARY KEY, iban pgcrypt_at_rest.encrypted);
INSERT INTO accounts SELECT i, pgcrypt_at_rest.encrypt('IBAN-' || i, 'rt', int4send(i)) FROM generate_series(1, 3) i;
SELECT id, pgcrypt_at_rest.decrypt_text(iban, int4send(id)) FROM accounts ORDER BY id;
UPDATE accounts SET iban = (SELECT iban FROM accounts WHERE id = 1) WHERE id = 2;
SELECT error_of('SELECT pgcrypt_at_rest.decrypt_text(iban, int4send(id)) FROM accounts WHERE id = 2');

-- a NULL value gives NULL; a NULL keyring or context is an error, never a
-- silently stored NULL
SELECT pgcrypt_at_rest.encrypt(NULL::text, 'rt') IS NULL AS a,
	   pgcrypt_at_rest.encrypt(NULL::bytea, 'rt', 'c'::bytea) IS NULL AS b,
	   pgcrypt_at_rest.decrypt(NULL) IS NULL AS c,
	   pgcrypt_at_rest.decrypt_text(NULL, 'c'::bytea) IS NULL AS d;
SELECT pgcrypt_at_rest.encrypt('x', NULL);
SELECT pgcrypt_at_rest.encrypt(NULL::text, NULL);
SELECT pgcrypt_at_rest.encrypt('x'::bytea, 'rt', NULL);
SELECT pgcrypt_at_rest.decrypt(pgcrypt_at_rest.encrypt('x', 'rt'), NULL);
SELECT sqlstate_of($$SELECT pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('x', 'rt'), NULL)$$);

-- plaintext that is not valid text: decrypt() works, decrypt_text() refuses
-- without quoting any byte of it
SELECT pgcrypt_at_rest.decrypt(pgcrypt_at_rest.encrypt('\xc328'::bytea, 'rt')) AS raw_bytes;
SELECT pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('\xc328'::bytea, 'rt'));
SELECT pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('\x610062'::bytea, 'rt'));
SELECT sqlstate_of($$SELECT pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypt('\xc328'::bytea, 'rt'))$$);

-- a domain over the type, and values in arrays
CREATE DOMAIN secret_text AS pgcrypt_at_rest.encrypted;
CREATE TABLE notes (id int, body secret_text, history pgcrypt_at_rest.encrypted[]);
INSERT INTO notes VALUES (1, pgcrypt_at_rest.encrypt('note', 'rt'),
	ARRAY[pgcrypt_at_rest.encrypt('v1', 'rt'), pgcrypt_at_rest.encrypt('v2', 'rt')]);
SELECT pgcrypt_at_rest.decrypt_text(body) AS body,
	   (SELECT array_agg(pgcrypt_at_rest.decrypt_text(h)) FROM unnest(history) h) AS history
  FROM notes;
SELECT (history::text[]::pgcrypt_at_rest.encrypted[])[2]::bytea = history[2]::bytea AS array_text_round_trip FROM notes;
DROP TABLE notes, accounts;
DROP DOMAIN secret_text;

-- keys loaded while a parallel plan runs (a cold cache, values under two keys)
CREATE TABLE par AS SELECT i, pgcrypt_at_rest.encrypt('p' || i, 'rt') AS e FROM generate_series(1, 100) i;
SELECT pgcrypt_at_rest.rotate_keyring('rt') > 0 AS rotated;
INSERT INTO par SELECT i, pgcrypt_at_rest.encrypt('p' || i, 'rt') FROM generate_series(101, 200) i;
\c
SET force_parallel_mode = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF) CREATE TABLE par_out AS SELECT i, pgcrypt_at_rest.decrypt_text(e) AS t FROM par;
CREATE TABLE par_out AS SELECT i, pgcrypt_at_rest.decrypt_text(e) AS t FROM par;
SELECT count(*) AS rows, count(*) FILTER (WHERE t = 'p' || i) AS decrypted FROM par_out;
RESET ALL;
DROP TABLE par, par_out;
