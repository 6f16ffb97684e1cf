-- Recurring jobs (issue 5), v1. Applied by Alembic revision 0005 and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/053_job_schedules_v1.sql
-- Idempotent: IF NOT EXISTS, and the shipped schedule is inserted only when missing (an operator's change to it,
-- e.g. disabling it, survives a re-run). Never edit this file once released: add a _v2 file instead.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- One row per recurring job. Each /process-pending call enqueues the schedules whose next_run_at has come (once
-- per slot, even with concurrent callers: the row is taken FOR UPDATE SKIP LOCKED and the job's idempotency key is
-- 'schedule:<name>:<slot>'), then moves next_run_at to the next time the cron expression names after now. Slots
-- missed while nothing called collapse into one run. Manage with `flask jobs schedule ...`.
CREATE TABLE IF NOT EXISTS job_schedules (
    name             text        PRIMARY KEY CONSTRAINT job_schedules_name_check CHECK (name <> '' AND length(name) <= 200),
    cron             text        NOT NULL CONSTRAINT job_schedules_cron_check CHECK (cron <> '' AND length(cron) <= 200),
    job_type         text        NOT NULL CONSTRAINT job_schedules_job_type_check
                                 CHECK (job_type <> '' AND length(job_type) <= 200),
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    priority         smallint    NOT NULL DEFAULT 5 CONSTRAINT job_schedules_priority_check CHECK (priority BETWEEN 1 AND 10),
    enabled          boolean     NOT NULL DEFAULT true,
    next_run_at      timestamptz NOT NULL,
    last_enqueued_at timestamptz,
    last_job_id      bigint,
    created_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE job_schedules IS 'Recurring jobs: 5-field cron (UTC); see sql/README.md and `flask jobs schedule`.';

-- Serves the due-schedules query of every /process-pending call (jobprocessor/schedules.py DUE_SCHEDULES):
-- enabled AND next_run_at <= now() ORDER BY next_run_at. With nothing due it reads one index page.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS job_schedules_due_idx ON job_schedules (next_run_at) WHERE enabled;
-- (not CONCURRENTLY: the table is created just above, so the index is built on an empty or tiny table, and
-- CONCURRENTLY could not run in the migration's transaction with the CREATE TABLE)

-- Shipped: the daily cleanup (cleanup_old_jobs through the system.cleanup handler), 03:00 UTC.
INSERT INTO job_schedules (name, cron, job_type, payload, priority, next_run_at)
SELECT 'system.cleanup', '0 3 * * *', 'system.cleanup', '{}'::jsonb, 10,
       -- the next 03:00 UTC from now
       (today + interval '3 hours' + CASE WHEN now_utc >= today + interval '3 hours' THEN interval '1 day'
                                          ELSE interval '0' END) AT TIME ZONE 'UTC'
FROM (SELECT now() AT TIME ZONE 'UTC' AS now_utc, date_trunc('day', now() AT TIME ZONE 'UTC') AS today) AS t
ON CONFLICT (name) DO NOTHING;

RESET lock_timeout;
RESET statement_timeout;
