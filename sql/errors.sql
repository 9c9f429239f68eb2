--
-- Every way a value can fail to decrypt: a clear error, never garbage, and
-- never a byte of plaintext or key in the message.
--
SELECT pgcrypt_at_rest.create_keyring('err') AS err_key \gset
SELECT pgcrypt_at_rest.create_keyring('other') AS other_key \gset
CREATE TABLE victim AS
	SELECT pgcrypt_at_rest.encrypt('TOP-SECRET-PLAINTEXT', 'err')::bytea AS raw,
		   pgcrypt_at_rest.encrypt('TOP-SECRET-PLAINTEXT', 'err', 'ctx'::bytea)::bytea AS raw_ctx;

-- sanity: untouched values decrypt
SELECT pgcrypt_at_rest.decrypt_text(raw::pgcrypt_at_rest.encrypted) AS plain,
	   pgcrypt_at_rest.decrypt_text(raw_ctx::pgcrypt_at_rest.encrypted, 'ctx'::bytea) AS plain_ctx
  FROM victim;

-- flip one bit in each part of the value: key id (offset 4), nonce (5-28),
-- ciphertext (29 on), tag (last 16 bytes)
CREATE FUNCTION flip(b bytea, pos int) RETURNS pgcrypt_at_rest.encrypted
	LANGUAGE sql AS $$ SELECT set_byte(b, pos, get_byte(b, pos) # 1)::pgcrypt_at_rest.encrypted $$;
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text(flip(raw, 5)) FROM victim$$);
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text(flip(raw, 4)) FROM victim$$);
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text(flip(raw, 29)) FROM victim$$);
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text(flip(raw, octet_length(raw) - 1)) FROM victim$$);
SELECT sqlstate_of(format('SELECT pgcrypt_at_rest.decrypt(flip(%L, %s))', raw, pos))
  FROM victim, generate_series(5, 64, 9) pos;
-- a version byte we do not know is rejected on the way in
SELECT set_byte(raw, 0, 2)::pgcrypt_at_rest.encrypted FROM victim;

-- relabelled with another existing key id: the header is authenticated
SELECT error_of(format($$SELECT pgcrypt_at_rest.decrypt_text(overlay(raw placing int4send(%s) from 2 for 4)::pgcrypt_at_rest.encrypted)
  FROM victim$$, :other_key));

-- truncated: shorter than the overhead is malformed, anything else fails to authenticate
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text(substring(raw from 1 for octet_length(raw) - 1)::pgcrypt_at_rest.encrypted) FROM victim$$);
SELECT substring(raw from 1 for 44)::pgcrypt_at_rest.encrypted FROM victim;
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text((raw || '\x00'::bytea)::pgcrypt_at_rest.encrypted) FROM victim$$);

-- wrong, missing or extra context
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text(raw_ctx::pgcrypt_at_rest.encrypted, 'CTX'::bytea) FROM victim$$);
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text(raw_ctx::pgcrypt_at_rest.encrypted) FROM victim$$);
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text(raw::pgcrypt_at_rest.encrypted, 'ctx'::bytea) FROM victim$$);

-- a key id this database never had
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt(overlay(raw placing int4send(424242) from 2 for 4)::pgcrypt_at_rest.encrypted)
  FROM victim$$);

-- new key ids are drawn at random above the serial ids of older versions
SELECT bool_and(key_id BETWEEN 16777216 AND 2147483647) AS ids_in_random_range,
	   count(DISTINCT key_id) = count(*) AS ids_distinct
  FROM pgcrypt_at_rest.keys;

-- a value copied from another database names a key that does not exist here,
-- not one that exists and fails to open it
\set regress_db :DBNAME
CREATE DATABASE regress_pcar_elsewhere;
\c regress_pcar_elsewhere
CREATE EXTENSION pgcrypt_at_rest;
SELECT pgcrypt_at_rest.create_keyring('err') > 0 AS same_keyring_name_there;
SELECT pgcrypt_at_rest.encrypt('from elsewhere', 'err')::bytea AS elsewhere_value \gset
\c :regress_db
SELECT error_of(format('SELECT pgcrypt_at_rest.decrypt_text(%L::bytea::pgcrypt_at_rest.encrypted)', :'elsewhere_value'));
DROP DATABASE regress_pcar_elsewhere;

-- a key this server holds no copy of (its sealed copy removed by hand)
SELECT pgcrypt_at_rest.create_keyring('uncopied') AS uncopied_key \gset
CREATE TABLE uncopied AS SELECT pgcrypt_at_rest.encrypt('x', 'uncopied') AS v;
DELETE FROM pgcrypt_at_rest.sealed_key WHERE key_id = :uncopied_key;
-- (error_of() masks this server's public key, which differs at every run)
SELECT error_of('SELECT pgcrypt_at_rest.decrypt(v) FROM uncopied');
-- encrypt() says it needs the active key, and that a restore needs new key tables
SELECT error_of($$SELECT pgcrypt_at_rest.encrypt('y', 'uncopied')$$);
-- the hint is the add_server() call to run elsewhere, with this server's key
DO $$
BEGIN
	PERFORM pgcrypt_at_rest.decrypt(v) FROM uncopied;
EXCEPTION WHEN insufficient_privilege THEN
	DECLARE
		hint text;
	BEGIN
		GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
		RAISE NOTICE 'hint names add_server with this server''s key: %',
			hint = format('On a server that can open the key, add this one: SELECT pgcrypt_at_rest.add_server(''a name for this server'', ''%s'');',
						  pgcrypt_at_rest.server_public_key());
	END;
END
$$;

-- a destroyed key (marked by hand until the rotation worker does it)
SELECT pgcrypt_at_rest.create_keyring('doomed') AS doomed_key \gset
CREATE TABLE doomed AS SELECT pgcrypt_at_rest.encrypt('x', 'doomed') AS v;
SELECT pgcrypt_at_rest.decrypt_text(v) AS readable_before FROM doomed;
SELECT pgcrypt_at_rest.rotate_keyring('doomed') <> :doomed_key AS rotated;
BEGIN;
DELETE FROM pgcrypt_at_rest.sealed_key WHERE key_id = :doomed_key;
UPDATE pgcrypt_at_rest.data_key SET status = 'destroyed', destroyed_at = '2026-01-01 00:00:00+00'
 WHERE id = :doomed_key;
COMMIT;
SELECT error_of($$SELECT pgcrypt_at_rest.decrypt_text(v) FROM doomed$$);
SELECT sqlstate_of('SELECT pgcrypt_at_rest.decrypt_text(v) FROM doomed') LIKE '55000: key % of keyring "doomed" was destroyed' AS destroyed_55000;

-- the SQLSTATE of each failure, all distinct from one another
SELECT sqlstate_of($$SELECT pgcrypt_at_rest.decrypt_text(raw_ctx::pgcrypt_at_rest.encrypted) FROM victim$$) AS tampered_or_wrong_context,
	   sqlstate_of($$SELECT pgcrypt_at_rest.decrypt(overlay(raw placing int4send(424242) from 2 for 4)::pgcrypt_at_rest.encrypted) FROM victim$$) AS unknown_key,
	   sqlstate_of('SELECT pgcrypt_at_rest.decrypt(v) FROM uncopied') AS no_copy,
	   sqlstate_of($$SELECT 'enc:AQ=='::pgcrypt_at_rest.encrypted$$) AS malformed_text,
	   sqlstate_of($$SELECT '\x01'::bytea::pgcrypt_at_rest.encrypted$$) AS malformed_bytes;

-- none of the messages above quoted the plaintext: the whole output is the proof,
-- and this checks the errors once more
SELECT count(*) AS messages_with_plaintext
  FROM (VALUES
	(sqlstate_of($$SELECT pgcrypt_at_rest.decrypt_text(flip(raw, 30)) FROM victim$$)),
	(sqlstate_of($$SELECT pgcrypt_at_rest.decrypt_text(raw_ctx::pgcrypt_at_rest.encrypted, 'x'::bytea) FROM victim$$))
  ) AS m(msg)
 WHERE msg LIKE '%SECRET%';

-- nothing was lost: the good values still decrypt after all those failures
SELECT pgcrypt_at_rest.decrypt_text(raw::pgcrypt_at_rest.encrypted) AS still_plain FROM victim;
DROP TABLE victim, uncopied, doomed;
DROP FUNCTION flip(bytea, int);
