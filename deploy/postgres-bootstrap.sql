-- ringcount — PostgreSQL bootstrap: the login role, its database, and nothing more.
-- Run once as a superuser (idempotent: re-running changes nothing that exists):
--
--   sudo -u postgres psql -v password='a-long-random-secret' -f deploy/postgres-bootstrap.sql
--
-- Omit -v password=... to authenticate by peer (local socket, OS user "ringcount": the name
-- systemd's DynamicUser gives ringcount.service) or by client certificate instead.
-- The tables are not created here: ringcount creates and migrates its schema at start-up,
-- versioned and under an advisory lock (SPEC §4), as the owner of this database.
\set ON_ERROR_STOP on

-- Login role with no special powers. Eight connections: ringcount uses one per node (the
-- persister) plus one for start-up loading; the rest is headroom for a restart overlap.
SELECT 'CREATE ROLE ringcount LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ringcount') \gexec
ALTER ROLE ringcount WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION
  NOBYPASSRLS CONNECTION LIMIT 8;
\if :{?password}
ALTER ROLE ringcount WITH PASSWORD :'password';
\endif

-- Acknowledged durable increments must survive a crash: never let a session turn this off.
ALTER ROLE ringcount SET synchronous_commit = on;
-- A stuck client must not hold row locks (and block the next flush) forever.
ALTER ROLE ringcount SET idle_in_transaction_session_timeout = '60s';

-- The database belongs to the role: in PostgreSQL 15 the public schema is owned by
-- pg_database_owner, so ringcount may create its tables there and nobody else may.
SELECT 'CREATE DATABASE ringcount OWNER ringcount ENCODING ''UTF8'' TEMPLATE template0'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ringcount') \gexec
ALTER DATABASE ringcount OWNER TO ringcount;
REVOKE ALL ON DATABASE ringcount FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE ringcount TO ringcount;

\connect ringcount
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO ringcount;

-- Optional read-only role for dashboards and ad-hoc queries (GET /stats?scope=cluster is
-- served by ringcount itself and does not need it). Uncomment to create it.
-- CREATE ROLE ringcount_ro LOGIN NOINHERIT CONNECTION LIMIT 4;
-- GRANT CONNECT ON DATABASE ringcount TO ringcount_ro;
-- GRANT USAGE ON SCHEMA public TO ringcount_ro;
-- ALTER DEFAULT PRIVILEGES FOR ROLE ringcount IN SCHEMA public GRANT SELECT ON TABLES TO ringcount_ro;
