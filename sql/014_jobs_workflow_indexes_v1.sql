-- The indexes of light workflows (issue 16), v1, built CONCURRENTLY. Applied by Alembic revision 0015_workflows and
-- runnable by hand (statement by statement, outside a transaction; psql does so by default):
--   psql -v ON_ERROR_STOP=1 -f sql/014_jobs_workflow_indexes_v1.sql      (after 013_jobs_workflows_v1.sql)
-- Idempotent: IF NOT EXISTS. An interrupted build leaves an INVALID index: the check below stops with instructions.
-- Never edit this file once released: add a _v2 file instead.
-- Locks: SHARE UPDATE EXCLUSIVE on the table per build (reads and writes go on; DDL and VACUUM wait); each build
-- waits for transactions older than itself. The jobs indexes are partial: they hold only jobs with a singleton key
-- that have not finished, and waiting jobs (seconds to build whatever the history).
SET lock_timeout = '10s';
SET statement_timeout = 0;

DO $$
DECLARE
    broken text;
BEGIN
    SELECT string_agg(c.relname, ', ') INTO broken
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE NOT i.indisvalid
      AND c.relname IN ('jobs_singleton_key_idx', 'jobs_waiting_idx', 'job_dependencies_child_idx');
    IF broken IS NOT NULL THEN
        RAISE EXCEPTION 'invalid index(es) left by an interrupted CONCURRENTLY build: %', broken
            USING HINT = 'DROP INDEX CONCURRENTLY each of them, then run this file again.';
    END IF;
END
$$;

-- At most one job per singleton_key that has not finished: the enqueue's ON CONFLICT (a concurrent enqueue of the
-- same key waits for the first to commit, then finds it), and its lookup of the existing job by key.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS jobs_singleton_key_idx ON jobs (singleton_key)
    WHERE singleton_key IS NOT NULL AND status IN ('waiting', 'pending', 'running');

-- Waiting jobs, newest first: GET /jobs?status=waiting (keyset by id), the third branch of a listing without a
-- status (queries.LIST_JOBS), the health view's waiting row.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_waiting_idx ON jobs (id) WHERE status = 'waiting';

-- A job's parents: GET /jobs/<id>, and the DELETE trigger's removal of a deleted child's edges.
CREATE INDEX CONCURRENTLY IF NOT EXISTS job_dependencies_child_idx ON job_dependencies (child_id);

RESET lock_timeout;
RESET statement_timeout;
