-- The traceback of a job's last handler failure (issue 12), v1. Applied by Alembic revision 0013_ops_hardening
-- and runnable by hand:  psql -v ON_ERROR_STOP=1 -f sql/015_jobs_last_traceback_v1.sql
-- Idempotent (ADD COLUMN IF NOT EXISTS). Never edit this file once released: add a _v2 file instead.
-- Locks: ACCESS EXCLUSIVE on jobs for an instant (a nullable column without default: catalogue only, no table
-- rewrite); it waits at most lock_timeout behind an open transaction, then gives up.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- last_error holds `Type: message`; this holds where it happened: the handler's traceback, cut to its last
-- 8,000 characters (jobprocessor/executor.py), written with last_error and replaced with it (NULL when the newest
-- error has none, e.g. RetryLater). Shown by GET /jobs/<id> only, not in the listing's pages.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS last_traceback text;

COMMENT ON COLUMN jobs.last_traceback IS 'traceback of the error in last_error (bounded); NULL: none';

RESET lock_timeout;
RESET statement_timeout;
