-- The queue-health view, the alert thresholds and the alerts view (issue 5), v1. Applied by Alembic revision 0005
-- and runnable by hand:  psql -v ON_ERROR_STOP=1 -f sql/052_queue_health_v1.sql
-- Idempotent: the thresholds row is inserted only when missing (an operator's adjustment survives a re-run), the
-- views are CREATE OR REPLACE. Never edit this file once released: add a _v2 file instead.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- One row of alert thresholds. Adjust with e.g.
--   UPDATE job_queue_alert_settings SET backlog_warning = 5000, backlog_critical = 50000;
CREATE TABLE IF NOT EXISTS job_queue_alert_settings (
    singleton              boolean PRIMARY KEY DEFAULT true CONSTRAINT job_queue_alert_settings_singleton CHECK (singleton),
    backlog_warning        bigint  NOT NULL DEFAULT 1000  CHECK (backlog_warning > 0),
    backlog_critical       bigint  NOT NULL DEFAULT 10000 CHECK (backlog_critical > 0),
    pending_age_warning_s  bigint  NOT NULL DEFAULT 300   CHECK (pending_age_warning_s > 0),
    pending_age_critical_s bigint  NOT NULL DEFAULT 3600  CHECK (pending_age_critical_s > 0),
    lease_overrun_grace_s  bigint  NOT NULL DEFAULT 60    CHECK (lease_overrun_grace_s >= 0),
    failure_rate_warning   numeric NOT NULL DEFAULT 0.10  CHECK (failure_rate_warning BETWEEN 0 AND 1),
    failure_rate_critical  numeric NOT NULL DEFAULT 0.50  CHECK (failure_rate_critical BETWEEN 0 AND 1),
    failure_rate_min_jobs  bigint  NOT NULL DEFAULT 20    CHECK (failure_rate_min_jobs > 0)
);
COMMENT ON TABLE job_queue_alert_settings IS 'Thresholds of job_queue_alerts (one row); see sql/README.md.';
COMMENT ON COLUMN job_queue_alert_settings.backlog_warning IS 'due pending jobs at which "backlog" warns';
COMMENT ON COLUMN job_queue_alert_settings.backlog_critical IS 'due pending jobs at which "backlog" is critical';
COMMENT ON COLUMN job_queue_alert_settings.pending_age_warning_s IS
    'seconds the oldest due pending job may wait before "pending_too_old" warns';
COMMENT ON COLUMN job_queue_alert_settings.pending_age_critical_s IS
    'seconds of waiting at which "pending_too_old" is critical';
COMMENT ON COLUMN job_queue_alert_settings.lease_overrun_grace_s IS
    'seconds a running job may stay past its lease (the next call rescues it) before "running_past_lease" fires';
COMMENT ON COLUMN job_queue_alert_settings.failure_rate_warning IS
    'failed / (completed + failed) over the last hour at which "failure_rate" warns';
COMMENT ON COLUMN job_queue_alert_settings.failure_rate_critical IS 'failure rate at which "failure_rate" is critical';
COMMENT ON COLUMN job_queue_alert_settings.failure_rate_min_jobs IS
    'finished jobs the last hour needs before its failure rate means anything';

INSERT INTO job_queue_alert_settings (singleton) VALUES (true) ON CONFLICT (singleton) DO NOTHING;

-- Per status: count, average duration, newest and oldest created_at, age of the oldest in seconds.
-- Rows: pending and running jobs, all of them whatever their age; finished jobs (completed, failed, cancelled)
-- that finished in the last 24 hours. Every status has a row, with count 0 when it has no jobs.
-- avg_duration_seconds: finished, completed_at - started_at (the last attempt's run time; a cancelled job never
-- started and does not count); running, now() - started_at (running for so far); pending, NULL.
-- Cost follows the live queue plus one day of history, not the table: each branch is one index scan
-- (jobs_claim_idx, jobs_running_lease_idx, jobs_finished_idx).
CREATE OR REPLACE VIEW job_queue_health AS
WITH counted AS (
    SELECT status, created_at, NULL::interval AS duration FROM jobs WHERE status = 'pending'
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
FROM (VALUES (1, 'pending'), (2, 'running'), (3, 'completed'), (4, 'failed'), (5, 'cancelled')) AS s (ord, status)
LEFT JOIN per_status AS p ON p.status = s.status
ORDER BY s.ord;

COMMENT ON VIEW job_queue_health IS
    'Per status: count, avg duration, newest/oldest created_at, oldest age; all pending/running, finished in 24 h.';

-- The alerts that fire now, one row each: alert, severity (warning | critical), value, threshold, message.
--   backlog             due pending jobs >= backlog_warning (critical from backlog_critical)
--   pending_too_old     the oldest due pending job has waited >= pending_age_warning_s since its run_at
--                       (critical from pending_age_critical_s): nothing is claiming, or not fast enough
--   running_past_lease  running jobs whose lease ended more than lease_overrun_grace_s ago: their worker died and
--                       no /process-pending call has rescued them (critical past 10x the grace: the cron is down)
--   failure_rate        failed / (completed + failed) over the last hour >= failure_rate_warning (critical from
--                       failure_rate_critical), once at least failure_rate_min_jobs jobs finished in that hour
--   alert_settings_missing  the thresholds row was deleted: no other alert can fire until it is back
-- Each measure is one index scan: jobs_claim_idx, jobs_running_lease_idx, jobs_finished_idx.
CREATE OR REPLACE VIEW job_queue_alerts AS
WITH s AS (
    SELECT * FROM job_queue_alert_settings WHERE singleton
), due AS (
    SELECT count(*) AS n, extract(epoch FROM now() - min(run_at)) AS oldest_wait_s
    FROM jobs WHERE status = 'pending' AND run_at <= now()
), overrun AS (
    SELECT count(*) AS n, extract(epoch FROM now() - min(locked_until)) AS worst_s
    FROM jobs, s
    WHERE status = 'running' AND locked_until < now() - make_interval(secs => s.lease_overrun_grace_s)
), last_hour AS (
    SELECT count(*) FILTER (WHERE status = 'failed') AS failed, count(*) AS finished
    FROM jobs WHERE status IN ('completed', 'failed') AND completed_at > now() - interval '1 hour'
)
SELECT 'backlog'::text AS alert,
       CASE WHEN due.n >= s.backlog_critical THEN 'critical' ELSE 'warning' END AS severity,
       due.n::numeric AS value,
       CASE WHEN due.n >= s.backlog_critical THEN s.backlog_critical ELSE s.backlog_warning END::numeric AS threshold,
       format('%s jobs are due and waiting (warning at %s, critical at %s)', due.n, s.backlog_warning,
              s.backlog_critical) AS message
FROM due, s WHERE due.n >= s.backlog_warning
UNION ALL
SELECT 'pending_too_old',
       CASE WHEN due.oldest_wait_s >= s.pending_age_critical_s THEN 'critical' ELSE 'warning' END,
       round(due.oldest_wait_s::numeric, 1),
       CASE WHEN due.oldest_wait_s >= s.pending_age_critical_s THEN s.pending_age_critical_s
            ELSE s.pending_age_warning_s END::numeric,
       format('the oldest due pending job has waited %s s since its run_at (warning at %s s, critical at %s s)',
              round(due.oldest_wait_s::numeric), s.pending_age_warning_s, s.pending_age_critical_s)
FROM due, s WHERE due.oldest_wait_s >= s.pending_age_warning_s
UNION ALL
SELECT 'running_past_lease',
       CASE WHEN overrun.worst_s >= 10 * greatest(s.lease_overrun_grace_s, 6) THEN 'critical' ELSE 'warning' END,
       overrun.n::numeric,
       s.lease_overrun_grace_s::numeric,
       format('%s running jobs are past their lease by up to %s s: their worker died and no call has rescued them '
              '(is the cron calling /process-pending?)', overrun.n, round(overrun.worst_s::numeric))
FROM overrun, s WHERE overrun.n > 0
UNION ALL
SELECT 'failure_rate',
       CASE WHEN last_hour.failed::numeric / last_hour.finished >= s.failure_rate_critical
            THEN 'critical' ELSE 'warning' END,
       round(last_hour.failed::numeric / last_hour.finished, 4),
       CASE WHEN last_hour.failed::numeric / last_hour.finished >= s.failure_rate_critical
            THEN s.failure_rate_critical ELSE s.failure_rate_warning END,
       format('%s of the %s jobs finished in the last hour failed (%s%%; warning at %s%%, critical at %s%%)',
              last_hour.failed, last_hour.finished, round(100.0 * last_hour.failed / last_hour.finished, 1),
              round(100 * s.failure_rate_warning, 1), round(100 * s.failure_rate_critical, 1))
FROM last_hour, s
WHERE last_hour.finished >= s.failure_rate_min_jobs
  AND last_hour.failed::numeric / last_hour.finished >= s.failure_rate_warning
UNION ALL
SELECT 'alert_settings_missing', 'critical', NULL, NULL,
       'job_queue_alert_settings has no row: no other alert can fire; re-run sql/052_queue_health_v1.sql'
WHERE NOT EXISTS (SELECT 1 FROM job_queue_alert_settings);

COMMENT ON VIEW job_queue_alerts IS 'The queue alerts that fire now, with severity and message; see sql/README.md.';

RESET lock_timeout;
RESET statement_timeout;
