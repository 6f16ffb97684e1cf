-- Indexes for the operators' and DBAs' queries (issue 5), v1. Applied by Alembic revision 0004 and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/050_ops_indexes_v1.sql
-- Every index is built CONCURRENTLY (writes to jobs go on while it builds) and IF NOT EXISTS (a second run is a
-- no-op). Run it outside a transaction: psql does by default; the migration runs it statement by statement in
-- autocommit. Never edit this file once released: add a _v2 file instead.
--
-- Indexes that already exist (sql/010_jobs_v1.sql): jobs_claim_idx (the claim), jobs_running_lease_idx (rescue of
-- expired leases, the alerts' "running past lease"), jobs_batch_idx (batch progress), the idempotency key's unique
-- constraint. Each index below names the query it serves; an index no query uses is only a cost on every write.

-- Wait at most 10 s for a lock (CONCURRENTLY needs only SHARE UPDATE EXCLUSIVE, which conflicts with other DDL and
-- VACUUM, not with reads or writes) instead of queueing behind a long DDL. No statement timeout: building an index
-- over 10M rows takes minutes, and a build cancelled half-way leaves an INVALID index behind.
SET lock_timeout = '10s';
SET statement_timeout = 0;

-- A CONCURRENTLY build that failed (cancelled, lock timeout, deadlock) leaves an INVALID index, which IF NOT EXISTS
-- would then silently keep. Stop with instructions instead of pretending success.
DO $$
DECLARE
    broken text;
BEGIN
    SELECT string_agg(c.relname, ', ') INTO broken
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE NOT i.indisvalid AND i.indrelid = 'jobs'::regclass
      AND c.relname IN ('jobs_type_status_idx', 'jobs_store_status_idx', 'jobs_user_store_status_idx',
                        'jobs_finished_idx');
    IF broken IS NOT NULL THEN
        RAISE EXCEPTION 'invalid index(es) left by an interrupted CONCURRENTLY build: %', broken
            USING HINT = 'DROP INDEX CONCURRENTLY each of them, then run this file again.';
    END IF;
END
$$;

-- Serves GET /jobs?type=...&status=... (queries.LIST_JOBS): equality on type and status, then the keyset order
-- id DESC, so a page is one short range scan.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_type_status_idx ON jobs (type, status, id);

-- Serves GET /jobs?store_id=...&status=... (queries.LIST_JOBS): a tenant's jobs, by status, newest first. Partial:
-- jobs without a store never match a store filter.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_store_status_idx ON jobs (store_id, status, id)
    WHERE store_id IS NOT NULL;

-- Serves the per-user dashboard GET /jobs?user_id=...&store_id=...&status=... (queries.LIST_JOBS): one user's jobs
-- in one store, by status, newest first. Partial: system jobs without a user never match a user filter.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_user_store_status_idx ON jobs (user_id, store_id, status, id)
    WHERE user_id IS NOT NULL;

-- Serves, over finished jobs only (pending/running rows never enter it):
--   cleanup_old_jobs()  status = 'completed' AND completed_at < cutoff ORDER BY completed_at LIMIT n (the batches)
--   job_queue_health    finished in the last 24 h, per status
--   job_queue_alerts    the failure rate of the last hour
-- (status, completed_at) makes each of these one range scan per status.
CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_finished_idx ON jobs (status, completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

RESET lock_timeout;
RESET statement_timeout;
