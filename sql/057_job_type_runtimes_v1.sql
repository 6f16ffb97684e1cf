-- Runtime estimates per job type (issue 10), v1. Applied by Alembic revision 0009_ticks and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/057_job_type_runtimes_v1.sql
-- Idempotent (IF NOT EXISTS). Never edit this file once released: add a _v2 file instead.
-- Locks: creates a new table; touches no existing table.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- The run times of each type's latest successful runs, shared by every process and instance: a call starts a job
-- only while the type's estimate (a high percentile of these, jobprocessor/policies/runtime.py) fits in what is
-- left of its budget, and sizes the concurrency of rate-limited types from their mean. Each call appends a sample
-- of what it ran when it writes outcomes (one statement per type and batch); only the newest samples are kept, so
-- the estimate follows a type whose run time changes.
CREATE TABLE IF NOT EXISTS job_type_runtimes (
    type        text        PRIMARY KEY CONSTRAINT job_type_runtimes_type_check CHECK (type <> ''),
    recent_s    real[]      NOT NULL DEFAULT '{}',  -- seconds, oldest first, at most runtime.SAMPLES_KEPT
    runs        bigint      NOT NULL DEFAULT 0,     -- successful runs counted since the row was created
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE job_type_runtimes IS 'Recent successful run times per job type (the tick''s start rule); see '
                                      'sql/README.md.';

RESET lock_timeout;
RESET statement_timeout;
