-- The alerts view, v2 (issue 10): two more alerts and their thresholds. Applied by Alembic revision 0009_ticks and
-- runnable by hand:  psql -v ON_ERROR_STOP=1 -f sql/058_queue_health_v2.sql  (after 052 v1 and 056).
-- Idempotent: ADD COLUMN IF NOT EXISTS keeps an operator's thresholds, the view is CREATE OR REPLACE (same columns,
-- more rows). Never edit this file once released: add a _v3 file instead.
-- Locks: ACCESS EXCLUSIVE on job_queue_alert_settings (one row) and on the view, each for an instant.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

ALTER TABLE job_queue_alert_settings
    ADD COLUMN IF NOT EXISTS no_tick_after_s bigint NOT NULL DEFAULT 300
        CONSTRAINT job_queue_alert_settings_no_tick_after_s_check CHECK (no_tick_after_s > 0);
ALTER TABLE job_queue_alert_settings
    ADD COLUMN IF NOT EXISTS stuck_handler_after_s bigint NOT NULL DEFAULT 900
        CONSTRAINT job_queue_alert_settings_stuck_handler_after_s_check CHECK (stuck_handler_after_s > 0);
COMMENT ON COLUMN job_queue_alert_settings.no_tick_after_s IS
    'seconds since the last /process-pending call started at which "no_tick" fires (critical while jobs are due)';
COMMENT ON COLUMN job_queue_alert_settings.stuck_handler_after_s IS
    'seconds a handler may run before "stuck_handler" fires (900: longer than any call''s budget)';

-- v1's alerts (sql/052_queue_health_v1.sql describes them), and:
--   no_tick         the newest row of job_ticks started no_tick_after_s ago or more: the cron stopped calling
--                   (critical while due jobs wait); also critical when no call was ever recorded and a job has been
--                   due for no_tick_after_s
--   stuck_handler   running jobs whose handler started stuck_handler_after_s ago or more: a process keeps a job's
--                   lease while its handler's thread lives (up to JOBS_STUCK_HANDLER_S), so a hung handler shows
--                   here, not as running_past_lease
-- The new measures are one index scan each: job_ticks_started_idx (max), jobs_running_lease_idx's table rows.
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
), ticks AS (
    SELECT max(started_at) AS last_started, extract(epoch FROM now() - max(started_at)) AS age_s FROM job_ticks
), stuck AS (
    SELECT count(*) AS n, extract(epoch FROM now() - min(started_at)) AS worst_s
    FROM jobs, s
    WHERE status = 'running' AND started_at < now() - make_interval(secs => s.stuck_handler_after_s)
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
SELECT 'no_tick',
       CASE WHEN due.n > 0 THEN 'critical' ELSE 'warning' END,
       round(coalesce(ticks.age_s, due.oldest_wait_s)::numeric, 1),
       s.no_tick_after_s::numeric,
       CASE WHEN ticks.last_started IS NULL
            THEN format('no /process-pending call has been recorded yet and %s jobs are due, the oldest for %s s: '
                        'is the cron set up?', due.n, round(due.oldest_wait_s::numeric))
            ELSE format('the last /process-pending call started %s s ago (warning at %s s%s): is the cron still '
                        'calling?', round(ticks.age_s::numeric), s.no_tick_after_s,
                        CASE WHEN due.n > 0 THEN format('; %s jobs are due', due.n) ELSE '' END) END
FROM ticks, due, s
WHERE ticks.age_s >= s.no_tick_after_s OR (ticks.last_started IS NULL AND due.oldest_wait_s >= s.no_tick_after_s)
UNION ALL
SELECT 'stuck_handler', 'warning', stuck.n::numeric, s.stuck_handler_after_s::numeric,
       format('%s handlers have been running for up to %s s (warning at %s s): their process keeps their lease '
              'while the thread lives; look for a hung call in the worker''s log', stuck.n,
              round(stuck.worst_s::numeric), s.stuck_handler_after_s)
FROM stuck, s WHERE stuck.n > 0
UNION ALL
SELECT 'alert_settings_missing', 'critical', NULL, NULL,
       'job_queue_alert_settings has no row: no other alert can fire; re-run sql/052_queue_health_v1.sql and sql/058_queue_health_v2.sql'
WHERE NOT EXISTS (SELECT 1 FROM job_queue_alert_settings);

COMMENT ON VIEW job_queue_alerts IS 'The queue alerts that fire now, with severity and message; see sql/README.md.';

RESET lock_timeout;
RESET statement_timeout;
