-- Tick history (issue 10), v1: one row per /process-pending call (or `flask jobs process`), so operators and
-- /metrics can tell what each call did and that the cron still calls. Applied by Alembic revision 0009_ticks and
-- runnable by hand:  psql -v ON_ERROR_STOP=1 -f sql/056_job_ticks_v1.sql
-- Idempotent (IF NOT EXISTS). Never edit this file once released: add a _v2 file instead.
-- Locks: creates a new table; touches no existing table.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- Written by the call itself: the first claim statement of a call inserts its row (so a call with nothing due
-- stays one statement: its row is final at once), the call updates it when it ends. A call that died leaves
-- ended_at NULL. Retention: system.cleanup deletes rows older than JOBS_TICK_HISTORY_DAYS, in batches.
CREATE TABLE IF NOT EXISTS job_ticks (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker      text        NOT NULL,  -- the call's lease token: host:pid:random
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,           -- NULL while the call runs, or when it died before it could say
    job_limit   integer     NOT NULL,  -- the call's `limit`
    budget_s    real        NOT NULL,
    job_type    text,                  -- the call's `type` filter, if any
    rounds      integer     NOT NULL DEFAULT 0,  -- claim statements that claimed at least one job
    claimed     integer     NOT NULL DEFAULT 0,
    succeeded   integer     NOT NULL DEFAULT 0,
    retried     integer     NOT NULL DEFAULT 0,
    failed      integer     NOT NULL DEFAULT 0,
    released    integer     NOT NULL DEFAULT 0,
    rescued     integer     NOT NULL DEFAULT 0,
    abandoned   integer     NOT NULL DEFAULT 0,
    lost        integer     NOT NULL DEFAULT 0,
    busy_s      real        NOT NULL DEFAULT 0  -- handler run time summed over the call's threads
);
COMMENT ON TABLE job_ticks IS 'One row per /process-pending call: what it did; see sql/README.md.';

-- Serves "when did the last tick start" (the no_tick alert, /metrics, GET /ticks) and the retention's range delete.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS job_ticks_started_idx ON job_ticks (started_at);

RESET lock_timeout;
RESET statement_timeout;
