-- The shared OpenAI rate limiter, v1. Applied by Alembic revision 0006_rate_limiter and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/030_rate_limiter_v1.sql
-- Idempotent (IF NOT EXISTS everywhere). Never edit this file once released: add a _v2 file instead.
-- Locks: creates two new tables; touches no existing table.

SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- One row per limiter (today one: 'openai'), shared by every process and instance. Each reservation and each
-- settlement is one short transaction that locks this row (SELECT ... FOR UPDATE), computes the new state in
-- Python (jobprocessor/ratelimit/core.py) and writes it back; no lock is ever held across an HTTP call.
-- The budget is a token bucket per dimension, kept as the time it will be full again (GCRA): a bucket with time
-- `*_free_at` in the past is full; one in the future owes the difference, at the configured rate.
CREATE TABLE IF NOT EXISTS rate_limiter (
    name                       text        PRIMARY KEY CONSTRAINT rate_limiter_name_check CHECK (name <> ''),
    request_free_at            timestamptz NOT NULL DEFAULT now(),
    token_free_at              timestamptz NOT NULL DEFAULT now(),
    -- no call starts before this: the server answered 429 (Retry-After) or said it has nothing left
    hold_until                 timestamptz NOT NULL DEFAULT now(),
    -- requests and tokens used per second over the last 60 seconds (a ring; window_second is its newest slot)
    window_second              bigint      NOT NULL DEFAULT 0,
    window_requests            integer[]   NOT NULL DEFAULT '{}',
    window_tokens              bigint[]    NOT NULL DEFAULT '{}',
    -- running totals since the row was created: reserved - settled = calls in flight (or lost with a process)
    reserved_requests          bigint      NOT NULL DEFAULT 0,
    reserved_tokens            bigint      NOT NULL DEFAULT 0,
    settled_requests           bigint      NOT NULL DEFAULT 0,
    settled_reserved_tokens    bigint      NOT NULL DEFAULT 0,
    sent_requests              bigint      NOT NULL DEFAULT 0,
    used_tokens                bigint      NOT NULL DEFAULT 0,
    throttled                  bigint      NOT NULL DEFAULT 0,
    -- consecutive server errors (5xx), for a backoff shared by every process; 0 after any success
    error_streak               integer     NOT NULL DEFAULT 0,
    -- what the server said last (x-ratelimit-remaining-*), for the stats
    server_remaining_requests  bigint,
    server_remaining_tokens    bigint,
    server_seen_at             timestamptz,
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- Jobs held back by a limiter: sleeping for their slot inside a call, or rescheduled (RetryLater) to when the
-- budget refills. A row counts as waiting until `until`; the job's next settlement deletes it, and rows long past
-- are deleted whenever a job is rescheduled, so the table stays as small as the backlog of waiting jobs.
CREATE TABLE IF NOT EXISTS rate_limiter_waits (
    job_id   bigint      PRIMARY KEY,
    name     text        NOT NULL,
    until    timestamptz NOT NULL
);

-- Serves the stats count (name, until > now()) and the deletion of rows long past.
CREATE INDEX IF NOT EXISTS rate_limiter_waits_until_idx ON rate_limiter_waits (name, until);

RESET lock_timeout;
RESET statement_timeout;
