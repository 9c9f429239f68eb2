/* pgcrypt_at_rest--1.2--1.3.sql: a worker that stands up to hostile tenants and many databases */

\echo Use "ALTER EXTENSION pgcrypt_at_rest UPDATE TO '1.3'" to load this file. \quit

------------------------------------------------------------------------------
-- Values that pin a key: listed, and a key destroyed anyway when an admin says so
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- The worker: per-table failures, waiting databases
------------------------------------------------------------------------------
