-- Serves the fair claim restricted to one job type (POST /process-pending?type=...), v1. Applied by Alembic
-- revision 0002_fair_claim and runnable by hand (statement by statement, see 020):
--   psql -v ON_ERROR_STOP=1 -f sql/021_jobs_fair_type_idx_v1.sql
-- Lock: SHARE UPDATE EXCLUSIVE on jobs. Idempotent: IF NOT EXISTS (an interrupted build: DROP INDEX CONCURRENTLY
-- jobs_fair_type_idx; and run again).
--
-- jobs_fair_idx with the type in front: without it, a typed claim would read past every pending job of other
-- types in each store's queue.
-- Wait at most 10 s for the lock (SHARE UPDATE EXCLUSIVE conflicts only with DDL and VACUUM) instead of queueing
-- behind a long DDL; no statement timeout: a build cancelled half-way leaves an INVALID index.
SET lock_timeout = '10s';
SET statement_timeout = 0;

CREATE INDEX CONCURRENTLY IF NOT EXISTS jobs_fair_type_idx
    ON jobs (type, priority, (coalesce(store_id, '')), run_at, id) INCLUDE (store_id)
    WHERE status = 'pending';

RESET lock_timeout;
RESET statement_timeout;
