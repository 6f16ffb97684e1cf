-- What OpenAI answers really use, v1 (issue 10): the output cap each call sends follows it. Applied by Alembic
-- revision 0010_openai_output_stats and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/031_openai_output_stats_v1.sql
-- Idempotent (IF NOT EXISTS everywhere). Never edit this file once released: add a _v2 file instead.
-- Locks: creates two new tables; touches no existing table.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- One row per (job type, model), shared by every process and instance: a decayed histogram of the answers'
-- completion_tokens (jobprocessor/policies/output_cap.py says how it is read: the cap is a high percentile of it,
-- with a margin, never above OPENAI_MAX_OUTPUT_TOKENS). Each answer is one short transaction that locks its row
-- (SELECT ... FOR UPDATE), lets the pure estimator add the answer and writes the row back. A handful of rows.
CREATE TABLE IF NOT EXISTS openai_output_stats (
    job_type    text        NOT NULL CONSTRAINT openai_output_stats_job_type_check CHECK (job_type <> ''),
    model       text        NOT NULL CONSTRAINT openai_output_stats_model_check CHECK (model <> ''),
    -- decayed weight of the answers per size bin (bin i holds answers of up to ceil(16 * 2^(i/8)) tokens)
    weights     float8[]    NOT NULL DEFAULT '{}',
    -- plain counts since the row was created: answers recorded, of which cut off at their cap
    answers     bigint      NOT NULL DEFAULT 0,
    cut_offs    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_type, model)
);

-- Jobs whose answer was cut off at its cap and that were rescheduled before they could ask again (not enough of
-- their deadline left): the cap their next call starts from, so a job never asks again with a cap already too small.
-- The job's next complete answer deletes its row; rows older than a day (jobs cancelled or failed meanwhile) are
-- deleted whenever a row is written, so the table stays as small as the number of such jobs.
CREATE TABLE IF NOT EXISTS openai_output_retry_caps (
    job_id      bigint      PRIMARY KEY,
    cap         integer     NOT NULL CONSTRAINT openai_output_retry_caps_cap_check CHECK (cap > 0),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

RESET lock_timeout;
RESET statement_timeout;
