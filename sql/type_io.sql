--
-- The encrypted type: text and binary input/output, casts, COPY
--
CREATE EXTENSION pgcrypt_at_rest;
\dx pgcrypt_at_rest
\dT+ pgcrypt_at_rest.encrypted

-- Errors are shown through these helpers, which later tests use too (and
-- copy into databases of their own).  Key ids are random and this server's
-- public key differs at every run, so both are masked: <id>, also where a
-- hint passes one to a function (destroy_key(<id>, ...)), and <public key>.
CREATE FUNCTION masked(message text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT regexp_replace(regexp_replace(regexp_replace(message, '\mkey -?\d+', 'key <id>', 'g'),
										 '\m(\w+_key)\(-?\d+', '\1(<id>', 'g'),
						  '\\x[0-9a-f]{64}', '\\x<public key>', 'g')
$$;
-- the SQLSTATE and message
CREATE FUNCTION sqlstate_of(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE query;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || masked(SQLERRM);
END
$$;
-- the SQLSTATE and message, then the detail and the hint, a row each
CREATE FUNCTION error_of(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
	detail text;
	hint text;
BEGIN
	EXECUTE query;
	RETURN NEXT 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN NEXT SQLSTATE || ': ' || masked(SQLERRM);
	IF detail <> '' THEN
		RETURN NEXT 'DETAIL: ' || masked(detail);
	END IF;
	IF hint <> '' THEN
		RETURN NEXT 'HINT: ' || masked(hint);
	END IF;
END
$$;

SELECT pgcrypt_at_rest.create_keyring('io') > 0 AS created;

CREATE TABLE io (id int, v pgcrypt_at_rest.encrypted);
INSERT INTO io SELECT i, pgcrypt_at_rest.encrypt('value ' || i, 'io') FROM generate_series(1, 20) i;
INSERT INTO io VALUES (21, NULL);

-- the text form is recognisable: 'enc:' and standard base64 of the whole value
SELECT count(*) FILTER (WHERE v::text ~ '^enc:[A-Za-z0-9+/]+=*$') AS well_formed,
	   count(*) FILTER (WHERE length(v::text) = 4 + 4 * ceil((45 + length('value ' || id)) / 3.0)) AS right_length
  FROM io WHERE v IS NOT NULL;

-- the bytes: version 1, the key id big-endian, then nonce, ciphertext, tag
SELECT bool_and(get_byte(v::bytea, 0) = 1) AS version_1,
	   bool_and(substring(v::bytea from 2 for 4) = int4send(pgcrypt_at_rest.key_id(v))) AS key_id_in_header,
	   bool_and(octet_length(v::bytea) = 45 + octet_length('value ' || id)) AS overhead_45
  FROM io WHERE v IS NOT NULL;

-- text round trip: output, then input, gives the same bytes
SELECT bool_and((v::text::pgcrypt_at_rest.encrypted)::bytea = v::bytea) AS text_round_trip
  FROM io WHERE v IS NOT NULL;

-- binary round trip through send/receive
SELECT bool_and(pgcrypt_at_rest.encrypted_send(v) = v::bytea) AS send_is_raw_bytes FROM io;
\getenv abs_builddir PG_ABS_BUILDDIR
\set binfile :abs_builddir '/results/io.bin'
\set txtfile :abs_builddir '/results/io.txt'
COPY io TO :'binfile' (FORMAT binary);
CREATE TABLE io_binary (LIKE io);
COPY io_binary FROM :'binfile' (FORMAT binary);

-- text COPY round trip
COPY io TO :'txtfile';
CREATE TABLE io_text (LIKE io);
COPY io_text FROM :'txtfile';

SELECT count(*) AS rows,
	   count(*) FILTER (WHERE b.v::bytea IS NOT DISTINCT FROM io.v::bytea) AS same_binary,
	   count(*) FILTER (WHERE t.v::bytea IS NOT DISTINCT FROM io.v::bytea) AS same_text,
	   count(*) FILTER (WHERE pgcrypt_at_rest.decrypt_text(b.v) = 'value ' || io.id
						  AND pgcrypt_at_rest.decrypt_text(t.v) = 'value ' || io.id) AS decrypt_after_copy
  FROM io JOIN io_binary b USING (id) JOIN io_text t USING (id);

-- casts: to bytea and back, the second one validating
SELECT bool_and((v::bytea)::pgcrypt_at_rest.encrypted::bytea = v::bytea) AS bytea_round_trip FROM io;
SELECT '\x00'::bytea::pgcrypt_at_rest.encrypted;
SELECT ''::bytea::pgcrypt_at_rest.encrypted;
SELECT ('\x02' || repeat('00', 60))::bytea::pgcrypt_at_rest.encrypted;
SELECT ('\x0100000001' || repeat('00', 39))::bytea::pgcrypt_at_rest.encrypted;
SELECT ('\x0100000000' || repeat('00', 40))::bytea::pgcrypt_at_rest.encrypted;
SELECT ('\x01ffffffff' || repeat('00', 40))::bytea::pgcrypt_at_rest.encrypted;
SELECT pgcrypt_at_rest.key_id(('\x0100000007' || repeat('00', 40))::bytea::pgcrypt_at_rest.encrypted);
-- there is no implicit or assignment cast either way
SELECT sqlstate_of($$INSERT INTO io VALUES (99, '\x0100000007'::bytea)$$);
SELECT sqlstate_of($$SELECT octet_length(v) FROM io$$);

-- malformed text input
SELECT 'garbage'::pgcrypt_at_rest.encrypted;
SELECT 'enc:'::pgcrypt_at_rest.encrypted;
SELECT 'enc:not base64!'::pgcrypt_at_rest.encrypted;
SELECT 'ENC:AQAAAAE='::pgcrypt_at_rest.encrypted;
SELECT 'enc:AQAAAAE='::pgcrypt_at_rest.encrypted;
-- a valid value followed by junk, or missing its padding
SELECT sqlstate_of(format('SELECT %L::pgcrypt_at_rest.encrypted', v::text || 'x')) FROM io WHERE id = 1;
SELECT sqlstate_of(format('SELECT %L::pgcrypt_at_rest.encrypted', v::text || ' ')) FROM io WHERE id = 1;
SELECT sqlstate_of(format('SELECT %L::pgcrypt_at_rest.encrypted', rtrim(v::text, '='))) FROM io WHERE id = 6;
SELECT sqlstate_of($$SELECT 'enc:'::pgcrypt_at_rest.encrypted$$);

-- COPY rejects a malformed value in either format and loads nothing
\set badfile :abs_builddir '/results/bad.bin'
COPY (SELECT 1, '\x01000000'::bytea) TO :'badfile' (FORMAT binary);
COPY io_binary FROM :'badfile' (FORMAT binary);
COPY io_text FROM stdin;
50	enc:AQAA
\.
SELECT count(*) AS still_21 FROM io_binary;

-- NULLs
SELECT NULL::pgcrypt_at_rest.encrypted IS NULL AS null_in,
	   pgcrypt_at_rest.key_id(NULL) IS NULL AS null_key_id;
