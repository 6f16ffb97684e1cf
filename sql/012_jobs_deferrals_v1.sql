-- Bounded deferral and attempts that count runs (issue 10), v1. Applied by Alembic revision 0009_ticks and runnable
-- by hand:  psql -v ON_ERROR_STOP=1 -f sql/012_jobs_deferrals_v1.sql
-- Idempotent (ADD COLUMN IF NOT EXISTS). Never edit this file once released: add a _v2 file instead.
-- Locks: ACCESS EXCLUSIVE on jobs for an instant per column (a constant default is stored in the catalogue, no
-- table rewrite since PostgreSQL 11); it waits at most lock_timeout behind an open transaction, then gives up.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- How often a job was put off without running to an end: RetryLater from its handler, or cut short by the end of a
-- call's budget. Neither spends an attempt, so without a bound a job could be put off forever; the processor fails
-- a job deferred more than JOBS_MAX_DEFERRALS times, or for longer than JOBS_MAX_DEFERRAL_S since its first
-- deferral (jobprocessor/policies/deferral.py). A manual retry starts both afresh.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS deferrals integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS deferred_since timestamptz;

COMMENT ON COLUMN jobs.deferrals IS 'times put off without spending an attempt (RetryLater, cut by a budget)';
COMMENT ON COLUMN jobs.deferred_since IS 'when it was first put off (NULL: never); see JOBS_MAX_DEFERRAL_S';
COMMENT ON COLUMN jobs.started_at IS 'when its current or last handler run started; NULL while only leased '
                                     '(claimed ahead of a free thread) or never run';

RESET lock_timeout;
RESET statement_timeout;
