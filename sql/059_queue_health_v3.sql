-- The health view, v3 (issue 16): a row for `waiting` (jobs waiting for their parents), before pending. Applied by
-- Alembic revision 0015_workflows and runnable by hand:  psql -v ON_ERROR_STOP=1 -f sql/059_queue_health_v3.sql
-- (after 052 and 014: it reads jobs_waiting_idx). Idempotent: CREATE OR REPLACE VIEW (same columns, one more row).
-- Never edit this file once released: add a _v4 file instead.
-- Locks: ACCESS EXCLUSIVE on the view for an instant; jobs is not locked.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- Per status: count, average duration, newest and oldest created_at, age of the oldest in seconds.
-- Rows: waiting, pending and running jobs, all of them whatever their age; finished jobs (completed, failed,
-- cancelled) that finished in the last 24 hours. Every status has a row, with count 0 when it has no jobs.
-- avg_duration_seconds: finished, completed_at - started_at (the last attempt's run time; a cancelled job never
-- started and does not count); running, now() - started_at (running for so far); waiting and pending, NULL.
-- Cost follows the live queue plus one day of history, not the table: each branch is one index scan
-- (jobs_waiting_idx, jobs_claim_idx, jobs_running_lease_idx, jobs_finished_idx).
CREATE OR REPLACE VIEW job_queue_health AS
WITH counted AS (
    SELECT status, created_at, NULL::interval AS duration FROM jobs WHERE status = 'waiting'
    UNION ALL
    SELECT status, created_at, NULL FROM jobs WHERE status = 'pending'
    UNION ALL
    SELECT status, created_at, now() - started_at FROM jobs WHERE status = 'running'
    UNION ALL
    SELECT status, created_at, completed_at - started_at FROM jobs
    WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at > now() - interval '24 hours'
), per_status AS (
    SELECT status, count(*) AS n, avg(duration) AS avg_duration, max(created_at) AS latest,
           min(created_at) AS oldest
    FROM counted
    GROUP BY status
)
SELECT s.status,
       coalesce(p.n, 0) AS count,
       round(extract(epoch FROM p.avg_duration), 3) AS avg_duration_seconds,
       p.latest AS latest_created_at,
       p.oldest AS oldest_created_at,
       round(extract(epoch FROM now() - p.oldest), 3) AS oldest_age_seconds
FROM (VALUES (0, 'waiting'), (1, 'pending'), (2, 'running'), (3, 'completed'), (4, 'failed'), (5, 'cancelled'))
     AS s (ord, status)
LEFT JOIN per_status AS p ON p.status = s.status
ORDER BY s.ord;

COMMENT ON VIEW job_queue_health IS
    'Per status: count, avg duration, newest/oldest created_at, oldest age; all waiting/pending/running, '
    'finished in 24 h.';

RESET lock_timeout;
RESET statement_timeout;
