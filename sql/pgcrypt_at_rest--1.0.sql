/* pgcrypt_at_rest--1.0.sql */

\echo Use "CREATE EXTENSION pgcrypt_at_rest" to load this file. \quit

-- Everyone may use the type and read ciphertext; only roles granted the
-- functions below may encrypt, decrypt or manage keys.
REVOKE ALL ON SCHEMA pgcrypt_at_rest FROM PUBLIC;
GRANT USAGE ON SCHEMA pgcrypt_at_rest TO PUBLIC;

------------------------------------------------------------------------------
-- The type
------------------------------------------------------------------------------

CREATE TYPE pgcrypt_at_rest.encrypted;

CREATE FUNCTION pgcrypt_at_rest.encrypted_in(cstring)
RETURNS pgcrypt_at_rest.encrypted
AS 'MODULE_PATHNAME', 'encrypted_in'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION pgcrypt_at_rest.encrypted_out(pgcrypt_at_rest.encrypted)
RETURNS cstring
AS 'MODULE_PATHNAME', 'encrypted_out'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION pgcrypt_at_rest.encrypted_recv(internal)
RETURNS pgcrypt_at_rest.encrypted
AS 'MODULE_PATHNAME', 'encrypted_recv'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION pgcrypt_at_rest.encrypted_send(pgcrypt_at_rest.encrypted)
RETURNS bytea
AS 'MODULE_PATHNAME', 'encrypted_send'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Ciphertext does not compress: store it out of line without trying.
CREATE TYPE pgcrypt_at_rest.encrypted (
	INPUT = pgcrypt_at_rest.encrypted_in,
	OUTPUT = pgcrypt_at_rest.encrypted_out,
	RECEIVE = pgcrypt_at_rest.encrypted_recv,
	SEND = pgcrypt_at_rest.encrypted_send,
	INTERNALLENGTH = VARIABLE,
	STORAGE = external
);

COMMENT ON TYPE pgcrypt_at_rest.encrypted IS
	'XChaCha20-Poly1305 ciphertext: version, key id, nonce, ciphertext, tag';

CREATE FUNCTION pgcrypt_at_rest.encrypted(bytea)
RETURNS pgcrypt_at_rest.encrypted
AS 'MODULE_PATHNAME', 'encrypted_from_bytea'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE CAST (bytea AS pgcrypt_at_rest.encrypted)
	WITH FUNCTION pgcrypt_at_rest.encrypted(bytea);
CREATE CAST (pgcrypt_at_rest.encrypted AS bytea)
	WITHOUT FUNCTION;

------------------------------------------------------------------------------
-- Key tables.  Data keys exist here only as sealed copies, one per server.
------------------------------------------------------------------------------

CREATE SEQUENCE pgcrypt_at_rest.keyring_id_seq AS integer;
CREATE SEQUENCE pgcrypt_at_rest.data_key_id_seq AS integer;

CREATE TABLE pgcrypt_at_rest.keyring (
	id integer PRIMARY KEY DEFAULT nextval('pgcrypt_at_rest.keyring_id_seq'),
	name text NOT NULL UNIQUE
		CHECK (octet_length(name) BETWEEN 1 AND 63),
	created_at timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE pgcrypt_at_rest.keyring_id_seq OWNED BY pgcrypt_at_rest.keyring.id;

CREATE TABLE pgcrypt_at_rest.server (
	public_key bytea PRIMARY KEY CHECK (octet_length(public_key) = 32),
	name text NOT NULL UNIQUE,
	added_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgcrypt_at_rest.data_key (
	id integer PRIMARY KEY DEFAULT nextval('pgcrypt_at_rest.data_key_id_seq'),
	keyring_id integer NOT NULL REFERENCES pgcrypt_at_rest.keyring (id),
	status text NOT NULL DEFAULT 'active'
		CHECK (status IN ('active', 'deprecated', 'destroyed')),
	created_at timestamptz NOT NULL DEFAULT now(),
	deprecated_at timestamptz,
	destroyed_at timestamptz,
	CHECK ((status = 'active') = (deprecated_at IS NULL)),
	CHECK ((status = 'destroyed') = (destroyed_at IS NOT NULL))
);
ALTER SEQUENCE pgcrypt_at_rest.data_key_id_seq OWNED BY pgcrypt_at_rest.data_key.id;

CREATE UNIQUE INDEX data_key_one_active_per_keyring
	ON pgcrypt_at_rest.data_key (keyring_id) WHERE status = 'active';

CREATE TABLE pgcrypt_at_rest.sealed_key (
	key_id integer NOT NULL
		REFERENCES pgcrypt_at_rest.data_key (id) ON DELETE CASCADE,
	server_public_key bytea NOT NULL
		REFERENCES pgcrypt_at_rest.server (public_key) ON DELETE CASCADE,
	sealed bytea NOT NULL CHECK (octet_length(sealed) = 80),
	PRIMARY KEY (key_id, server_public_key)
);
CREATE INDEX sealed_key_server ON pgcrypt_at_rest.sealed_key (server_public_key);

COMMENT ON TABLE pgcrypt_at_rest.keyring IS 'named families of data keys';
COMMENT ON TABLE pgcrypt_at_rest.server IS 'servers whose public keys data keys are sealed to';
COMMENT ON TABLE pgcrypt_at_rest.data_key IS 'data keys and their status; material only in sealed_key';
COMMENT ON TABLE pgcrypt_at_rest.sealed_key IS 'each data key sealed (crypto_box_seal) to each server';

-- pg_dump carries the key tables, so a dump restores with its keys.
SELECT pg_catalog.pg_extension_config_dump('pgcrypt_at_rest.keyring', '');
SELECT pg_catalog.pg_extension_config_dump('pgcrypt_at_rest.keyring_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pgcrypt_at_rest.server', '');
SELECT pg_catalog.pg_extension_config_dump('pgcrypt_at_rest.data_key', '');
SELECT pg_catalog.pg_extension_config_dump('pgcrypt_at_rest.data_key_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pgcrypt_at_rest.sealed_key', '');

REVOKE ALL ON pgcrypt_at_rest.keyring, pgcrypt_at_rest.server,
	pgcrypt_at_rest.data_key, pgcrypt_at_rest.sealed_key,
	pgcrypt_at_rest.keyring_id_seq, pgcrypt_at_rest.data_key_id_seq
	FROM PUBLIC;

-- Any change to the key tables flushes every backend's key cache when it commits.
CREATE FUNCTION pgcrypt_at_rest._invalidate_key_cache()
RETURNS trigger
AS 'MODULE_PATHNAME', 'pcar_invalidate_key_cache'
LANGUAGE C;

CREATE TRIGGER invalidate_key_cache
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgcrypt_at_rest.keyring
	FOR EACH STATEMENT EXECUTE FUNCTION pgcrypt_at_rest._invalidate_key_cache();
CREATE TRIGGER invalidate_key_cache
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgcrypt_at_rest.server
	FOR EACH STATEMENT EXECUTE FUNCTION pgcrypt_at_rest._invalidate_key_cache();
CREATE TRIGGER invalidate_key_cache
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgcrypt_at_rest.data_key
	FOR EACH STATEMENT EXECUTE FUNCTION pgcrypt_at_rest._invalidate_key_cache();
CREATE TRIGGER invalidate_key_cache
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgcrypt_at_rest.sealed_key
	FOR EACH STATEMENT EXECUTE FUNCTION pgcrypt_at_rest._invalidate_key_cache();

-- CREATE EXTENSION registers this server before a restore loads the dumped
-- server rows.  A dumped row for the same public key is then already there
-- and is skipped; one for another key whose name is taken is renamed, so the
-- restore never fails and loses the sealed copies that reference it.
CREATE FUNCTION pgcrypt_at_rest._skip_known_server()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF EXISTS (SELECT FROM pgcrypt_at_rest.server s
			   WHERE s.public_key OPERATOR(pg_catalog.=) NEW.public_key) THEN
		RETURN NULL;
	END IF;
	IF EXISTS (SELECT FROM pgcrypt_at_rest.server s
			   WHERE s.name OPERATOR(pg_catalog.=) NEW.name) THEN
		NEW.name := NEW.name OPERATOR(pg_catalog.||) ' ('
			OPERATOR(pg_catalog.||) pg_catalog.encode(NEW.public_key, 'hex')
			OPERATOR(pg_catalog.||) ')';
	END IF;
	RETURN NEW;
END
$$;

CREATE TRIGGER skip_known_server
	BEFORE INSERT ON pgcrypt_at_rest.server
	FOR EACH ROW EXECUTE FUNCTION pgcrypt_at_rest._skip_known_server();

-- Fire in replica mode too (logical replication apply, pg_restore
-- --disable-triggers leaves them alone either way).
ALTER TABLE pgcrypt_at_rest.keyring ENABLE ALWAYS TRIGGER invalidate_key_cache;
ALTER TABLE pgcrypt_at_rest.server ENABLE ALWAYS TRIGGER invalidate_key_cache;
ALTER TABLE pgcrypt_at_rest.data_key ENABLE ALWAYS TRIGGER invalidate_key_cache;
ALTER TABLE pgcrypt_at_rest.sealed_key ENABLE ALWAYS TRIGGER invalidate_key_cache;
ALTER TABLE pgcrypt_at_rest.server ENABLE ALWAYS TRIGGER skip_known_server;

------------------------------------------------------------------------------
-- Encryption and decryption.  Not STRICT: a NULL value gives NULL, but a
-- NULL keyring or context is an error rather than a silent NULL.
------------------------------------------------------------------------------

CREATE FUNCTION pgcrypt_at_rest.encrypt(plaintext text, keyring text)
RETURNS pgcrypt_at_rest.encrypted
AS 'MODULE_PATHNAME', 'pcar_encrypt_text'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION pgcrypt_at_rest.encrypt(plaintext text, keyring text, context bytea)
RETURNS pgcrypt_at_rest.encrypted
AS 'MODULE_PATHNAME', 'pcar_encrypt_text'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION pgcrypt_at_rest.encrypt(plaintext bytea, keyring text)
RETURNS pgcrypt_at_rest.encrypted
AS 'MODULE_PATHNAME', 'pcar_encrypt_bytea'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION pgcrypt_at_rest.encrypt(plaintext bytea, keyring text, context bytea)
RETURNS pgcrypt_at_rest.encrypted
AS 'MODULE_PATHNAME', 'pcar_encrypt_bytea'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION pgcrypt_at_rest.decrypt(value pgcrypt_at_rest.encrypted)
RETURNS bytea
AS 'MODULE_PATHNAME', 'pcar_decrypt'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION pgcrypt_at_rest.decrypt(value pgcrypt_at_rest.encrypted, context bytea)
RETURNS bytea
AS 'MODULE_PATHNAME', 'pcar_decrypt'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION pgcrypt_at_rest.decrypt_text(value pgcrypt_at_rest.encrypted)
RETURNS text
AS 'MODULE_PATHNAME', 'pcar_decrypt_text'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION pgcrypt_at_rest.decrypt_text(value pgcrypt_at_rest.encrypted, context bytea)
RETURNS text
AS 'MODULE_PATHNAME', 'pcar_decrypt_text'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION pgcrypt_at_rest.key_id(value pgcrypt_at_rest.encrypted)
RETURNS integer
AS 'MODULE_PATHNAME', 'pcar_key_id'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION pgcrypt_at_rest.encrypt(text, text) IS
	'encrypt text under the keyring''s active key';
COMMENT ON FUNCTION pgcrypt_at_rest.encrypt(text, text, bytea) IS
	'encrypt text under the keyring''s active key, bound to a context';
COMMENT ON FUNCTION pgcrypt_at_rest.encrypt(bytea, text) IS
	'encrypt bytea under the keyring''s active key';
COMMENT ON FUNCTION pgcrypt_at_rest.encrypt(bytea, text, bytea) IS
	'encrypt bytea under the keyring''s active key, bound to a context';
COMMENT ON FUNCTION pgcrypt_at_rest.decrypt(pgcrypt_at_rest.encrypted) IS
	'decrypt a value to bytea';
COMMENT ON FUNCTION pgcrypt_at_rest.decrypt(pgcrypt_at_rest.encrypted, bytea) IS
	'decrypt a value encrypted with a context to bytea';
COMMENT ON FUNCTION pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypted) IS
	'decrypt a value to text in the database encoding';
COMMENT ON FUNCTION pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypted, bytea) IS
	'decrypt a value encrypted with a context to text';
COMMENT ON FUNCTION pgcrypt_at_rest.key_id(pgcrypt_at_rest.encrypted) IS
	'id of the data key a value is encrypted under';

------------------------------------------------------------------------------
-- Key management
------------------------------------------------------------------------------

CREATE FUNCTION pgcrypt_at_rest.create_keyring(name text)
RETURNS integer
AS 'MODULE_PATHNAME', 'pcar_create_keyring'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION pgcrypt_at_rest.rotate_keyring(name text)
RETURNS integer
AS 'MODULE_PATHNAME', 'pcar_rotate_keyring'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION pgcrypt_at_rest.server_public_key()
RETURNS bytea
AS 'MODULE_PATHNAME', 'pcar_server_public_key_sql'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION pgcrypt_at_rest._register_local_server()
RETURNS void
AS 'MODULE_PATHNAME', 'pcar_register_local_server'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION pgcrypt_at_rest.create_keyring(text) IS
	'create a keyring with its first active key; returns the key id';
COMMENT ON FUNCTION pgcrypt_at_rest.rotate_keyring(text) IS
	'make a new active key for a keyring and deprecate the previous one; returns the new key id';
COMMENT ON FUNCTION pgcrypt_at_rest.server_public_key() IS
	'this server''s X25519 public key';

------------------------------------------------------------------------------
-- Views: what a DBA reads.  No key material, sealed or not.
------------------------------------------------------------------------------

CREATE VIEW pgcrypt_at_rest.keyrings AS
	SELECT r.name,
		   (SELECT k.id FROM pgcrypt_at_rest.data_key k
			 WHERE k.keyring_id = r.id AND k.status = 'active') AS active_key_id,
		   (SELECT count(*) FROM pgcrypt_at_rest.data_key k
			 WHERE k.keyring_id = r.id AND k.status = 'deprecated') AS deprecated_keys,
		   r.created_at
	  FROM pgcrypt_at_rest.keyring r;

CREATE VIEW pgcrypt_at_rest.keys AS
	SELECT k.id AS key_id,
		   r.name AS keyring,
		   k.status,
		   k.created_at,
		   k.deprecated_at,
		   k.destroyed_at,
		   (SELECT count(*) FROM pgcrypt_at_rest.sealed_key s
			 WHERE s.key_id = k.id) AS sealed_copies
	  FROM pgcrypt_at_rest.data_key k
	  JOIN pgcrypt_at_rest.keyring r ON r.id = k.keyring_id;

CREATE VIEW pgcrypt_at_rest.servers AS
	SELECT s.name, s.public_key, s.added_at
	  FROM pgcrypt_at_rest.server s;

COMMENT ON VIEW pgcrypt_at_rest.keyrings IS 'keyrings and their active key';
COMMENT ON VIEW pgcrypt_at_rest.keys IS 'data keys, their status and how many servers hold a copy';
COMMENT ON VIEW pgcrypt_at_rest.servers IS 'servers that data keys are sealed to';

------------------------------------------------------------------------------
-- Privileges: key use and management are granted explicitly.
------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION
	pgcrypt_at_rest.encrypt(text, text),
	pgcrypt_at_rest.encrypt(text, text, bytea),
	pgcrypt_at_rest.encrypt(bytea, text),
	pgcrypt_at_rest.encrypt(bytea, text, bytea),
	pgcrypt_at_rest.decrypt(pgcrypt_at_rest.encrypted),
	pgcrypt_at_rest.decrypt(pgcrypt_at_rest.encrypted, bytea),
	pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypted),
	pgcrypt_at_rest.decrypt_text(pgcrypt_at_rest.encrypted, bytea),
	pgcrypt_at_rest.create_keyring(text),
	pgcrypt_at_rest.rotate_keyring(text),
	pgcrypt_at_rest._register_local_server(),
	pgcrypt_at_rest._invalidate_key_cache(),
	pgcrypt_at_rest._skip_known_server()
	FROM PUBLIC;

-- Last, once the tables exist: register this server if its secret is loaded.
SELECT pgcrypt_at_rest._register_local_server();
