--
-- Rotation reaches encrypted values wherever a column nests them: in arrays
-- (with NULL elements, several dimensions, other lower bounds), composite
-- types (nested, arrays of them, composites holding arrays, table row types),
-- domains over arrays and over composites, and partitions.  It re-encrypts
-- them, counts them before destroying a key, and checks the domains of the
-- values it rebuilds.  The worker is paused in this cluster (worker_enabled =
-- off, destroy_grace = 0): drain() and destroy_drained_keys() drive rotation.
-- Rotation is database-wide: only the keys of this test's keyrings are
-- checked.
--
SELECT pgcrypt_at_rest.create_keyring('nest') AS nest_key1 \gset

-- the types and tables
CREATE TYPE nest_card AS (holder text, number pgcrypt_at_rest.encrypted, pins pgcrypt_at_rest.encrypted[]);
CREATE TYPE nest_wallet AS (label text, card nest_card, spare pgcrypt_at_rest.encrypted);
CREATE DOMAIN nest_secrets AS pgcrypt_at_rest.encrypted[]
	CHECK (array_ndims(VALUE) = 1 AND array_length(VALUE, 1) BETWEEN 1 AND 3);
CREATE DOMAIN nest_card_d AS nest_card
	CHECK ((VALUE).holder IS NOT NULL AND (VALUE).number IS NOT NULL);

CREATE TABLE nest_arrays (id int PRIMARY KEY, p1 text[], a1 pgcrypt_at_rest.encrypted[],
						  p2 text[], a2 pgcrypt_at_rest.encrypted[]);
CREATE TABLE nest_cards (id int, c nest_card);
CREATE TABLE nest_wallets (id int, w nest_wallet);
CREATE TABLE nest_card_lists (id int, cs nest_card[]);
CREATE TABLE nest_domains (id int, s nest_secrets, dc nest_card_d);
CREATE TABLE nest_people (id int, dropped text, name text, ssn pgcrypt_at_rest.encrypted);
ALTER TABLE nest_people DROP COLUMN dropped;
CREATE TABLE nest_holders (id int, person nest_people);
CREATE TABLE nest_mixed (id int, a pgcrypt_at_rest.encrypted[]);
CREATE TABLE nest_parted (id int, p text[], a pgcrypt_at_rest.encrypted[]) PARTITION BY RANGE (id);
CREATE TABLE nest_parted_low PARTITION OF nest_parted FOR VALUES FROM (0) TO (10);
CREATE TABLE nest_parted_high PARTITION OF nest_parted FOR VALUES FROM (10) TO (100);

-- 1-D arrays with NULL elements (p1 holds the plaintexts); 2-D arrays with
-- bounds [0:1][-1:1], encrypted with a context; row 3 has only NULL elements
INSERT INTO nest_arrays
SELECT i,
	   ARRAY['a' || i || '_1', NULL, 'a' || i || '_3'],
	   ARRAY[pgcrypt_at_rest.encrypt('a' || i || '_1', 'nest'), NULL,
			 pgcrypt_at_rest.encrypt('a' || i || '_3', 'nest')],
	   ('[0:1][-1:1]=' || ARRAY[['b' || i || '_1', 'b' || i || '_2', NULL],
								['b' || i || '_4', 'b' || i || '_5', 'b' || i || '_6']]::text)::text[],
	   ('[0:1][-1:1]=' || ARRAY[[pgcrypt_at_rest.encrypt('b' || i || '_1', 'nest', int4send(i)),
								 pgcrypt_at_rest.encrypt('b' || i || '_2', 'nest', int4send(i)), NULL],
								[pgcrypt_at_rest.encrypt('b' || i || '_4', 'nest', int4send(i)),
								 pgcrypt_at_rest.encrypt('b' || i || '_5', 'nest', int4send(i)),
								 pgcrypt_at_rest.encrypt('b' || i || '_6', 'nest', int4send(i))]]::text)::pgcrypt_at_rest.encrypted[]
  FROM generate_series(1, 2) i;
INSERT INTO nest_arrays VALUES (3, '{NULL,NULL}', '{NULL,NULL}', NULL, NULL);

-- a composite holding an array, with a context; row 3 has no pins
INSERT INTO nest_cards
SELECT i, ROW('holder' || i, pgcrypt_at_rest.encrypt('n' || i, 'nest', int4send(i)),
			  CASE WHEN i < 3 THEN
				ARRAY[pgcrypt_at_rest.encrypt('pin' || i || '_1', 'nest', int4send(i)), NULL,
					  pgcrypt_at_rest.encrypt('pin' || i || '_3', 'nest', int4send(i))] END)::nest_card
  FROM generate_series(1, 3) i;

-- a composite in a composite; row 3 has no card
INSERT INTO nest_wallets
SELECT i, ROW('w' || i,
			  CASE WHEN i < 3 THEN ROW('wh' || i, pgcrypt_at_rest.encrypt('wn' || i, 'nest'),
									   ARRAY[pgcrypt_at_rest.encrypt('wp' || i, 'nest')])::nest_card END,
			  pgcrypt_at_rest.encrypt('ws' || i, 'nest'))::nest_wallet
  FROM generate_series(1, 3) i;

-- an array of composites: a NULL element, a NULL field, a NULL in a nested array
INSERT INTO nest_card_lists
SELECT i, ARRAY[ROW('l' || i || 'a', pgcrypt_at_rest.encrypt('ln' || i || 'a', 'nest'),
					ARRAY[pgcrypt_at_rest.encrypt('lp' || i || 'a', 'nest')])::nest_card,
				NULL,
				ROW('l' || i || 'c', NULL, ARRAY[NULL, pgcrypt_at_rest.encrypt('lp' || i || 'c', 'nest')])::nest_card]
  FROM generate_series(1, 2) i;

-- domains over an array (with a context) and over a composite, both with checks
INSERT INTO nest_domains
SELECT i, ARRAY[pgcrypt_at_rest.encrypt('s' || i || '_1', 'nest', int4send(i)), NULL,
				pgcrypt_at_rest.encrypt('s' || i || '_3', 'nest', int4send(i))],
	   ROW('d' || i, pgcrypt_at_rest.encrypt('dn' || i, 'nest'), ARRAY[pgcrypt_at_rest.encrypt('dp' || i, 'nest')])::nest_card_d
  FROM generate_series(1, 2) i;

-- a table (with a dropped column), and a column of its row type (with a context)
INSERT INTO nest_people SELECT i, 'name' || i, pgcrypt_at_rest.encrypt('ssn' || i, 'nest') FROM generate_series(1, 2) i;
INSERT INTO nest_holders
SELECT i, ROW(10 + i, 'hname' || i, pgcrypt_at_rest.encrypt('hssn' || i, 'nest', int4send(i)))::nest_people
  FROM generate_series(1, 2) i;

-- both partitions; one array of 200 elements, stored out of line
INSERT INTO nest_parted
SELECT i, ARRAY['pa' || i || '_1', NULL, 'pa' || i || '_3'],
	   ARRAY[pgcrypt_at_rest.encrypt('pa' || i || '_1', 'nest'), NULL, pgcrypt_at_rest.encrypt('pa' || i || '_3', 'nest')]
  FROM unnest('{1,2,11,12}'::int[]) i;
INSERT INTO nest_parted
SELECT 13, array_agg('big' || j ORDER BY j), array_agg(pgcrypt_at_rest.encrypt('big' || j, 'nest') ORDER BY j)
  FROM generate_series(1, 200) j;
SELECT reltoastrelid::regclass AS nest_toast FROM pg_class WHERE oid = 'nest_parted_high'::regclass \gset
SELECT count(DISTINCT chunk_id) AS values_out_of_line FROM :nest_toast;

-- the context applies to every value inside the column's value
SELECT pgcrypt_at_rest.set_column_context('nest_arrays', 'a2', 'pg_catalog.int4send(id)');
SELECT pgcrypt_at_rest.set_column_context('nest_cards', 'c', 'pg_catalog.int4send(id)');
SELECT pgcrypt_at_rest.set_column_context('nest_domains', 's', 'pg_catalog.int4send(id)');
SELECT pgcrypt_at_rest.set_column_context('nest_holders', 'person', 'pg_catalog.int4send(id)');

-- helpers: the key ids of the values inside a value, by unnest and field access
CREATE FUNCTION nest_ids(pgcrypt_at_rest.encrypted) RETURNS int[] LANGUAGE sql IMMUTABLE AS $$
	SELECT array_remove(ARRAY[pgcrypt_at_rest.key_id($1)], NULL)
$$;
CREATE FUNCTION nest_ids(pgcrypt_at_rest.encrypted[]) RETURNS int[] LANGUAGE sql IMMUTABLE AS $$
	SELECT coalesce(array_agg(pgcrypt_at_rest.key_id(e)), '{}') FROM unnest($1) AS e WHERE e IS NOT NULL
$$;
CREATE FUNCTION nest_ids(nest_card) RETURNS int[] LANGUAGE sql IMMUTABLE AS $$
	SELECT nest_ids(($1).number) || nest_ids(($1).pins)
$$;
CREATE FUNCTION nest_ids(nest_card[]) RETURNS int[] LANGUAGE sql IMMUTABLE AS $$
	SELECT coalesce(array_agg(k), '{}') FROM unnest($1) AS c, unnest(nest_ids(c)) AS k
$$;
CREATE FUNCTION nest_ids(nest_wallet) RETURNS int[] LANGUAGE sql IMMUTABLE AS $$
	SELECT nest_ids(($1).card) || nest_ids(($1).spare)
$$;
CREATE FUNCTION nest_ids(nest_people) RETURNS int[] LANGUAGE sql IMMUTABLE AS $$
	SELECT nest_ids(($1).ssn)
$$;
-- ... and independently, through the text form: how many values it shows,
-- and the text form with each value replaced by its plaintext (so shapes,
-- bounds, NULLs and other fields are compared too)
CREATE FUNCTION nest_token_count(value text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
	SELECT count(*) FROM regexp_matches(value, 'enc:[A-Za-z0-9+/]+=*', 'g')
$$;
CREATE FUNCTION nest_open(value text, context bytea) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	rest text := value;
	opened text := '';
	token text;
	at int;
BEGIN
	LOOP
		token := (regexp_match(rest, 'enc:[A-Za-z0-9+/]+=*'))[1];
		EXIT WHEN token IS NULL;
		at := strpos(rest, token);
		opened := opened || left(rest, at - 1) ||
			CASE WHEN context IS NULL THEN pgcrypt_at_rest.decrypt_text(token::pgcrypt_at_rest.encrypted)
				 ELSE pgcrypt_at_rest.decrypt_text(token::pgcrypt_at_rest.encrypted, context) END;
		rest := substr(rest, at + length(token));
	END LOOP;
	RETURN opened || rest;
END
$$;

-- every nested value, with the context it was encrypted with
CREATE VIEW nest_values AS
	SELECT 'nest_arrays.a1' AS col, id, a1::text AS v, nest_ids(a1) AS ids, NULL::bytea AS ctx FROM nest_arrays
	UNION ALL SELECT 'nest_arrays.a2', id, a2::text, nest_ids(a2), int4send(id) FROM nest_arrays
	UNION ALL SELECT 'nest_cards.c', id, c::text, nest_ids(c), int4send(id) FROM nest_cards
	UNION ALL SELECT 'nest_wallets.w', id, w::text, nest_ids(w), NULL FROM nest_wallets
	UNION ALL SELECT 'nest_card_lists.cs', id, cs::text, nest_ids(cs), NULL FROM nest_card_lists
	UNION ALL SELECT 'nest_domains.s', id, s::text, nest_ids(s), int4send(id) FROM nest_domains
	UNION ALL SELECT 'nest_domains.dc', id, dc::text, nest_ids(dc), NULL FROM nest_domains
	UNION ALL SELECT 'nest_people.ssn', id, ssn::text, nest_ids(ssn), NULL FROM nest_people
	UNION ALL SELECT 'nest_holders.person', id, person::text, nest_ids(person), int4send(id) FROM nest_holders
	UNION ALL SELECT 'nest_mixed.a', id, a::text, nest_ids(a), NULL FROM nest_mixed
	UNION ALL SELECT tableoid::regclass::text || '.a', id, a::text, nest_ids(a), NULL FROM nest_parted;

SELECT pgcrypt_at_rest.rotate_keyring('nest') AS nest_key2 \gset

-- after the rotation, an array with a value under the old key (copied) and
-- one under the new key, which the drain must leave as it is
INSERT INTO nest_mixed SELECT 1, ARRAY[a1[1], pgcrypt_at_rest.encrypt('mixed_new', 'nest')] FROM nest_arrays WHERE id = 1;
CREATE TABLE nest_untouched AS SELECT id, a[2]::bytea AS raw FROM nest_mixed;

-- the plaintexts, saved in the shape of their values
CREATE TABLE nest_saved AS SELECT col, id, nest_open(v, ctx) AS saved FROM nest_values;
SELECT col, id, CASE WHEN length(saved) > 100 THEN left(saved, 30) || ' ... ' || right(saved, 20)
				ELSE saved END AS plaintexts
  FROM nest_saved ORDER BY col, id;
-- the arrays' plaintexts are also kept beside them
SELECT id, nest_open(a1::text, NULL) = p1::text AS a1_matches,
	   nest_open(a2::text, int4send(id)) IS NOT DISTINCT FROM p2::text AS a2_matches
  FROM nest_arrays ORDER BY id;
SELECT id, nest_open(a::text, NULL) = p::text AS matches FROM nest_parted ORDER BY id;

-- per column: rows, values, values under the old and the new key, whether the
-- text form shows no other value, whether each value reads as saved
CREATE FUNCTION nest_report(old_key int, new_key int)
	RETURNS TABLE (col text, n_rows bigint, n_values bigint, under_old bigint, under_new bigint,
				   all_found bool, as_saved bool)
	LANGUAGE sql AS $$
	SELECT col, count(*), sum(cardinality(ids)),
		   sum(cardinality(array_positions(ids, old_key))),
		   sum(cardinality(array_positions(ids, new_key))),
		   sum(nest_token_count(v)) = sum(cardinality(ids)),
		   bool_and(nest_open(v, ctx) IS NOT DISTINCT FROM saved)
	  FROM nest_values FULL JOIN nest_saved USING (col, id)
	 GROUP BY col ORDER BY col
$$;

SELECT * FROM nest_report(:nest_key1, :nest_key2);

-- before the drain the old key's values are all still under it, nested:
-- destroy_drained_keys() counts them and keeps the key
SELECT count(*) AS nest_keys_destroyed
  FROM unnest(pgcrypt_at_rest.destroy_drained_keys()) AS d(key_id)
 WHERE key_id IN (SELECT key_id FROM pgcrypt_at_rest.keys WHERE keyring = 'nest');
SELECT key_id = :nest_key1 AS old_key, status FROM pgcrypt_at_rest.keys WHERE keyring = 'nest' ORDER BY generation;

-- the drain re-encrypts every value, element by element
SELECT pgcrypt_at_rest.drain() AS drained \gset
SELECT table_name, column_name, remaining, reencrypted, unrotatable
  FROM pgcrypt_at_rest.rotation_status
 WHERE key_id = :nest_key1 AND table_name::text LIKE 'nest%'
 ORDER BY table_name::text, column_name;
SELECT :drained >= sum(reencrypted) AS drain_counted_them FROM pgcrypt_at_rest.rotation_status WHERE key_id = :nest_key1;
SELECT * FROM nest_report(:nest_key1, :nest_key2);

-- shapes, bounds, NULL elements and other fields, read directly
SELECT id, array_dims(a1) AS a1_dims, a1[2] IS NULL AS a1_2_null, array_dims(a2) AS a2_dims,
	   pgcrypt_at_rest.decrypt_text(a2[0][-1], int4send(id)) AS a2_first,
	   a2[0][1] IS NULL AS a2_null, pgcrypt_at_rest.decrypt_text(a2[1][1], int4send(id)) AS a2_last,
	   nest_open(a2::text, int4send(id)) IS NOT DISTINCT FROM p2::text AS a2_matches
  FROM nest_arrays ORDER BY id;
SELECT id, (c).holder, pgcrypt_at_rest.decrypt_text((c).number, int4send(id)) AS number,
	   pgcrypt_at_rest.decrypt_text((c).pins[3], int4send(id)) AS pin3, (c).pins[2] IS NULL AS pin2_null
  FROM nest_cards ORDER BY id;
SELECT id, (w).label, ((w).card).holder, pgcrypt_at_rest.decrypt_text(((w).card).pins[1]) AS pin,
	   pgcrypt_at_rest.decrypt_text((w).spare) AS spare
  FROM nest_wallets ORDER BY id;
SELECT id, cs[2] IS NULL AS second_null, (cs[3]).number IS NULL AS third_no_number,
	   pgcrypt_at_rest.decrypt_text((cs[3]).pins[2]) AS third_pin
  FROM nest_card_lists ORDER BY id;
SELECT id, pg_typeof(s) AS s_type, pgcrypt_at_rest.decrypt_text(s[3], int4send(id)) AS s3,
	   pg_typeof(dc) AS dc_type, pgcrypt_at_rest.decrypt_text((dc).number) AS dc_number
  FROM nest_domains ORDER BY id;
SELECT id, (person).id AS person_id, (person).name,
	   pgcrypt_at_rest.decrypt_text((person).ssn, int4send(id)) AS ssn
  FROM nest_holders ORDER BY id;
SELECT a[2]::bytea = raw AS new_key_value_untouched, pgcrypt_at_rest.key_id(a[1]) = :nest_key2 AS old_value_moved
  FROM nest_mixed JOIN nest_untouched USING (id);
SELECT tableoid::regclass, id, array_dims(a) AS dims,
	   count(*) FILTER (WHERE e IS NOT NULL) AS n_values,
	   bool_and(e IS NULL OR pgcrypt_at_rest.key_id(e) = :nest_key2) AS new_key
  FROM nest_parted, unnest(a) AS e GROUP BY 1, 2, 3 ORDER BY 2;

-- now the old key goes, and every value still reads as it was
SELECT :nest_key1 = ANY (d) AS destroyed_old_key FROM pgcrypt_at_rest.destroy_drained_keys() AS d;
SELECT key_id = :nest_key1 AS old_key, status FROM pgcrypt_at_rest.keys WHERE keyring = 'nest' ORDER BY generation;
SELECT * FROM nest_report(:nest_key1, :nest_key2);
SELECT col, id, CASE WHEN length(opened) > 100 THEN left(opened, 30) || ' ... ' || right(opened, 20)
				ELSE opened END AS plaintexts
  FROM (SELECT col, id, nest_open(v, ctx) AS opened FROM nest_values) AS o
 ORDER BY col, id;

--
-- A range over encrypted (needs a btree operator class, which only a
-- superuser can create) is not opened: while such a column exists, no
-- deprecated key is destroyed.
--
CREATE FUNCTION nest_cmp(a pgcrypt_at_rest.encrypted, b pgcrypt_at_rest.encrypted) RETURNS int
	LANGUAGE sql IMMUTABLE STRICT AS 'SELECT pg_catalog.byteacmp(a::bytea, b::bytea)';
CREATE FUNCTION nest_lt(a pgcrypt_at_rest.encrypted, b pgcrypt_at_rest.encrypted) RETURNS bool
	LANGUAGE sql IMMUTABLE STRICT AS 'SELECT public.nest_cmp(a, b) < 0';
CREATE FUNCTION nest_le(a pgcrypt_at_rest.encrypted, b pgcrypt_at_rest.encrypted) RETURNS bool
	LANGUAGE sql IMMUTABLE STRICT AS 'SELECT public.nest_cmp(a, b) <= 0';
CREATE FUNCTION nest_eq(a pgcrypt_at_rest.encrypted, b pgcrypt_at_rest.encrypted) RETURNS bool
	LANGUAGE sql IMMUTABLE STRICT AS 'SELECT public.nest_cmp(a, b) = 0';
CREATE FUNCTION nest_ge(a pgcrypt_at_rest.encrypted, b pgcrypt_at_rest.encrypted) RETURNS bool
	LANGUAGE sql IMMUTABLE STRICT AS 'SELECT public.nest_cmp(a, b) >= 0';
CREATE FUNCTION nest_gt(a pgcrypt_at_rest.encrypted, b pgcrypt_at_rest.encrypted) RETURNS bool
	LANGUAGE sql IMMUTABLE STRICT AS 'SELECT public.nest_cmp(a, b) > 0';
CREATE OPERATOR < (FUNCTION = nest_lt, LEFTARG = pgcrypt_at_rest.encrypted, RIGHTARG = pgcrypt_at_rest.encrypted);
CREATE OPERATOR <= (FUNCTION = nest_le, LEFTARG = pgcrypt_at_rest.encrypted, RIGHTARG = pgcrypt_at_rest.encrypted);
CREATE OPERATOR = (FUNCTION = nest_eq, LEFTARG = pgcrypt_at_rest.encrypted, RIGHTARG = pgcrypt_at_rest.encrypted);
CREATE OPERATOR >= (FUNCTION = nest_ge, LEFTARG = pgcrypt_at_rest.encrypted, RIGHTARG = pgcrypt_at_rest.encrypted);
CREATE OPERATOR > (FUNCTION = nest_gt, LEFTARG = pgcrypt_at_rest.encrypted, RIGHTARG = pgcrypt_at_rest.encrypted);
CREATE OPERATOR CLASS nest_ops FOR TYPE pgcrypt_at_rest.encrypted USING btree AS
	OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
	FUNCTION 1 nest_cmp(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted);
CREATE TYPE nest_range AS RANGE (SUBTYPE = pgcrypt_at_rest.encrypted, SUBTYPE_OPCLASS = nest_ops);

CREATE TABLE nest_ranges (id int, r nest_range, mr nest_multirange);
INSERT INTO nest_ranges VALUES (1, nest_range(pgcrypt_at_rest.encrypt('r1', 'nest'), NULL),
	nest_multirange(nest_range(pgcrypt_at_rest.encrypt('m1', 'nest'), NULL)));
SELECT pgcrypt_at_rest.rotate_keyring('nest') AS nest_key3 \gset
SELECT pgcrypt_at_rest.drain() > 0 AS drained;

-- the other columns were drained again
SELECT * FROM nest_report(:nest_key2, :nest_key3);
-- the ranges' values were left under the old key, which stays, and the
-- status says why
SELECT :nest_key2 = ANY (d) AS destroyed_old_key FROM pgcrypt_at_rest.destroy_drained_keys() AS d;
SELECT key_id = :nest_key2 AS old_key, status FROM pgcrypt_at_rest.keys WHERE keyring = 'nest' ORDER BY generation;
SELECT column_name, last_error LIKE 'a range over encrypted values:%' AS reported
  FROM pgcrypt_at_rest.rotation_status
 WHERE key_id = :nest_key2 AND table_name = 'nest_ranges'::regclass
 ORDER BY column_name;
SELECT pgcrypt_at_rest.key_id(lower(r)) = :nest_key2 AS r_old_key, pgcrypt_at_rest.decrypt_text(lower(r)) AS r,
	   pgcrypt_at_rest.key_id(lower(mr)) = :nest_key2 AS mr_old_key, pgcrypt_at_rest.decrypt_text(lower(mr)) AS mr
  FROM nest_ranges;

-- one such column is enough to keep the key; without them it goes
ALTER TABLE nest_ranges DROP COLUMN r;
SELECT :nest_key2 = ANY (d) AS destroyed_old_key FROM pgcrypt_at_rest.destroy_drained_keys() AS d;
ALTER TABLE nest_ranges DROP COLUMN mr;
SELECT :nest_key2 = ANY (d) AS destroyed_old_key FROM pgcrypt_at_rest.destroy_drained_keys() AS d;
SELECT key_id = :nest_key3 AS active_key, status FROM pgcrypt_at_rest.keys WHERE keyring = 'nest' ORDER BY generation;
SELECT * FROM nest_report(:nest_key2, :nest_key3);

--
-- A rebuilt value is checked against its domain: here a domain that pins its
-- elements to the key they were written with refuses the new key, and the
-- drain stops with the domain's error.
--
SELECT pgcrypt_at_rest.create_keyring('nestpin') AS pin_key1 \gset
CREATE FUNCTION nest_all_under(elements pgcrypt_at_rest.encrypted[], pinned int) RETURNS bool
	LANGUAGE sql IMMUTABLE AS $$
	SELECT bool_and(pgcrypt_at_rest.key_id(e) = pinned) FROM pg_catalog.unnest(elements) AS e
$$;
CREATE DOMAIN nest_pinned AS pgcrypt_at_rest.encrypted[]
	CONSTRAINT nest_pinned_key CHECK (public.nest_all_under(VALUE, :pin_key1));
CREATE TABLE nest_pins (id int, s nest_pinned);
INSERT INTO nest_pins
SELECT i, ARRAY[pgcrypt_at_rest.encrypt('pinned' || i, 'nestpin'), NULL]
  FROM generate_series(1, 2) i;
SELECT pgcrypt_at_rest.rotate_keyring('nestpin') AS pin_key2 \gset
SELECT pgcrypt_at_rest.drain();

-- nothing was changed, and the old key stays
SELECT id, pgcrypt_at_rest.key_id(s[1]) = :pin_key1 AS old_key, pgcrypt_at_rest.decrypt_text(s[1]) AS plaintext
  FROM nest_pins ORDER BY id;
SELECT :pin_key1 = ANY (d) AS destroyed_old_key FROM pgcrypt_at_rest.destroy_drained_keys() AS d;
SELECT key_id = :pin_key1 AS old_key, status FROM pgcrypt_at_rest.keys WHERE keyring = 'nestpin' ORDER BY generation;

-- pinned to the new key instead, the rebuilt values pass the check
ALTER DOMAIN nest_pinned DROP CONSTRAINT nest_pinned_key;
ALTER DOMAIN nest_pinned ADD CONSTRAINT nest_pinned_key CHECK (public.nest_all_under(VALUE, :pin_key2)) NOT VALID;
SELECT pgcrypt_at_rest.drain() > 0 AS drained;
SELECT reencrypted FROM pgcrypt_at_rest.rotation_status
 WHERE key_id = :pin_key1 AND table_name = 'nest_pins'::regclass;
SELECT id, pgcrypt_at_rest.key_id(s[1]) = :pin_key2 AS new_key, pgcrypt_at_rest.decrypt_text(s[1]) AS plaintext,
	   s[2] IS NULL AS second_null
  FROM nest_pins ORDER BY id;
SELECT :pin_key1 = ANY (d) AS destroyed_old_key FROM pgcrypt_at_rest.destroy_drained_keys() AS d;
SELECT key_id = :pin_key1 AS old_key, status FROM pgcrypt_at_rest.keys WHERE keyring = 'nestpin' ORDER BY generation;

DROP VIEW nest_values;
DROP FUNCTION nest_report(int, int), nest_ids(pgcrypt_at_rest.encrypted), nest_ids(pgcrypt_at_rest.encrypted[]),
	nest_ids(nest_card), nest_ids(nest_card[]), nest_ids(nest_wallet), nest_ids(nest_people),
	nest_token_count(text), nest_open(text, bytea);
DROP TABLE nest_arrays, nest_cards, nest_wallets, nest_card_lists, nest_domains, nest_holders, nest_people,
	nest_mixed, nest_untouched, nest_parted, nest_saved, nest_ranges, nest_pins;
DROP DOMAIN nest_secrets, nest_card_d, nest_pinned;
DROP FUNCTION nest_all_under(pgcrypt_at_rest.encrypted[], int);
DROP TYPE nest_wallet, nest_card, nest_range;
DROP OPERATOR FAMILY nest_ops USING btree;
DROP OPERATOR <(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted), <=(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted),
	=(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted), >=(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted),
	>(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted);
DROP FUNCTION nest_lt(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted),
	nest_le(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted), nest_eq(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted),
	nest_ge(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted), nest_gt(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted),
	nest_cmp(pgcrypt_at_rest.encrypted, pgcrypt_at_rest.encrypted);
