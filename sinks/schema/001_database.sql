-- The dnsflow database. Migrations themselves are recorded in dnsflow.schema_migrations
-- (created by the migrator before this file runs).
CREATE DATABASE IF NOT EXISTS dnsflow;
