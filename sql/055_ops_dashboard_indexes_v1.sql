-- The dashboard indexes of GET /jobs split into live and finished halves (issue 5), v1. Applied by Alembic revision
-- 0008 and runnable by hand (statement by statement, outside a transaction; psql does so by default):
--   psql -v ON_ERROR_STOP=1 -f sql/055_ops_dashboard_indexes_v1.sql
-- Replaces jobs_type_status_idx, jobs_store_status_idx and jobs_user_store_status_idx of sql/050 (run 050 again and
-- it recreates them: run this file after it). Never edit this file once released: add a _v2 file instead.
--
-- Why: a job's status changes are never HOT updates (status is in partial indexes' predicates), so every version of
-- a job adds an entry to every index whose predicate it matches. The three indexes of sql/050 matched every
-- version, so the claim (pending -> running) inserted into three indexes as big as the whole history (0.8-1 GB each
-- at 10M rows, one tree level deeper than at 0 rows). Split by the same status filter that GET /jobs uses, each
-- version enters one small or one big index: pending and running versions (the claim's writes, and enqueue's) go to
-- the *_live_idx indexes, which hold only the live queue whatever the history; only the final version (finish,
-- cancel, lease rescue that fails a job) goes to a big *_finished_idx. The same queries are served: a status
-- filter implies exactly one of the two predicates (tests/test_ops_indexes.py shows each plan).
-- Locks: SHARE UPDATE EXCLUSIVE on jobs per build or drop (reads and writes go on; DDL and VACUUM wait), and each
-- waits for transactions older than itself. Idempotent: IF NOT EXISTS / IF EXISTS. An interrupted build leaves an
-- INVALID index: the check below stops with instructions.
SET lock_timeout = '10s';
SET statement_timeout = 0;

DO $$
DECLARE
    broken text;
BEGIN
    SELECT string_agg(c.relname, ', ') INTO broken
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE NOT i.indisvalid AND i.indrelid = 'jobs'::regclass
      AND c.relname IN ('jobs_type_status_live_idx', 'jobs_type_status_finished_idx',
                        'jobs_store_status_live_idx', 'jobs_store_status_finished_idx',
                        'jobs_user_store_status_live_idx', 'jobs_user_store_status_finished_idx');
    IF broken IS NOT NULL THEN
        RAISE EXCEPTION 'invalid index(es) left by an interrupted CONCURRENTLY build: %', broken
            USING HINT = 'DROP INDEX CONCURRENTLY each of them, then run this file again.';
    END IF;
END
$$;

-- Serve GET /jobs?type=...&status=... (queries.LIST_JOBS), keyset by id DESC: one short range scan per page.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_type_status_live_idx ON jobs (type, status, id)
    WHERE status IN ('pending', 'running');
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_type_status_finished_idx ON jobs (type, status, id)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- Serve GET /jobs?store_id=...&status=... (a tenant's jobs by status, newest first).
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_store_status_live_idx ON jobs (store_id, status, id)
    WHERE store_id IS NOT NULL AND status IN ('pending', 'running');
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_store_status_finished_idx ON jobs (store_id, status, id)
    WHERE store_id IS NOT NULL AND status IN ('completed', 'failed', 'cancelled');

-- Serve the per-user dashboard GET /jobs?user_id=...&store_id=...&status=...
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_user_store_status_live_idx ON jobs (user_id, store_id, status, id)
    WHERE user_id IS NOT NULL AND status IN ('pending', 'running');
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_user_store_status_finished_idx ON jobs (user_id, store_id, status, id)
    WHERE user_id IS NOT NULL AND status IN ('completed', 'failed', 'cancelled');

-- The whole-history indexes they replace: dropped only now, so the listings always have an index to use.
DROP INDEX CONCURRENTLY IF EXISTS jobs_type_status_idx;
DROP INDEX CONCURRENTLY IF EXISTS jobs_store_status_idx;
DROP INDEX CONCURRENTLY IF EXISTS jobs_user_store_status_idx;

RESET lock_timeout;
RESET statement_timeout;
