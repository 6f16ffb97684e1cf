-- Server-wide autovacuum setting recommended for a server that hosts the jobs queue (issue 5), v1. NOT applied by
-- any migration, and not part of the schema: it changes the whole server (every database on it), needs a superuser
-- (or a role granted ALTER SYSTEM on the parameter), and belongs to whoever runs the server. Run it by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/server/autovacuum_naptime_v1.sql
-- Idempotent (sets the same value again). Managed services (RDS, Cloud SQL, ...) refuse ALTER SYSTEM: set the same
-- parameter in the instance's parameter group / flags instead. Undo: ALTER SYSTEM RESET autovacuum_naptime; then
-- SELECT pg_reload_conf();
--
-- Why: the per-table settings of jobs (sql/054_jobs_storage_v1.sql, _v2.sql) say WHEN jobs needs a vacuum; how soon
-- a worker comes to look is autovacuum_naptime, server-wide (default 1 min: the launcher visits each database once
-- per naptime). Dead entries of finished jobs wait that long in front of the live ones in the claim's indexes. After
-- an unpaced burst of 1M jobs through a 12M-row table the claim was 2.5x its fresh latency with 1 min and
-- 0.7x-1.2x with 5 s, with the shipped per-table settings (docs/BENCHMARKS.md). Cost: the launcher wakes more often; each visit reads the database's table statistics
-- (cheap), and vacuums run as soon as a table needs one rather than up to a minute later.
-- Also check that autovacuum_max_workers (default 3) is not taken by long vacuums of big tables elsewhere on the
-- server: a worker busy for an hour on another table is a worker jobs does not get.
ALTER SYSTEM SET autovacuum_naptime = '5s';
-- reload: autovacuum_naptime needs no restart
SELECT pg_reload_conf();
