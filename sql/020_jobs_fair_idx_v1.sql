-- Serves the fair claim (jobs_fair_claim() in 022_fair_claim_v1.sql), v1. Applied by Alembic revision
-- 0002_fair_claim and runnable by hand (psql runs its statements one by one; the migration does the same, in autocommit):
--   psql -v ON_ERROR_STOP=1 -f sql/020_jobs_fair_idx_v1.sql
-- Lock: SHARE UPDATE EXCLUSIVE on jobs (reads and writes go on while it builds). Idempotent: IF NOT EXISTS.
-- If a build is interrupted, it leaves an INVALID index that IF NOT EXISTS would keep: `DROP INDEX CONCURRENTLY
-- jobs_fair_idx;` and run this file again.
--
-- One ordered queue per (priority, store): coalesce(store_id, '') is the store key (CHECK store_id <> '' makes ''
-- free to mean "no store", so jobs without a store form one store of their own). The claim walks it two ways:
-- a loose index scan (one probe per store of a priority level: `store > previous ORDER BY store, run_at, id
-- LIMIT 1`) finds each store's oldest pending job, and per-store probes read a store's next due jobs in
-- (run_at, id) order from a cursor. INCLUDE (store_id) lets the store probes be index-only scans (coalesce() of an
-- included column is computable from the index). Finished rows never enter it.
-- Wait at most 10 s for the lock (SHARE UPDATE EXCLUSIVE conflicts only with DDL and VACUUM) instead of queueing
-- behind a long DDL; no statement timeout: a build cancelled half-way leaves an INVALID index.
SET lock_timeout = '10s';
SET statement_timeout = 0;

CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_fair_idx
    ON jobs (priority, (coalesce(store_id, '')), run_at, id) INCLUDE (store_id)
    WHERE status = 'pending';

RESET lock_timeout;
RESET statement_timeout;
