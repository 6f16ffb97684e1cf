-- The alerts view, v3 (issue 11): a row per store whose oldest due job has waited too long (a per-tenant SLO),
-- and the function that finds those stores, which /metrics also reads (the worst few). Applied by Alembic
-- revision 0016_flow_control and runnable by hand:  psql -v ON_ERROR_STOP=1 -f sql/061_queue_health_v4.sql
-- (after 052, 058 and 027). Idempotent: ADD COLUMN IF NOT EXISTS keeps an operator's thresholds, the function and
-- the view are CREATE OR REPLACE (same columns, more rows). Never edit this file once released: add a _v5 file.
-- Locks: ACCESS EXCLUSIVE on job_queue_alert_settings (one row) and on the view, each for an instant.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

ALTER TABLE job_queue_alert_settings
    ADD COLUMN IF NOT EXISTS store_lag_warning_s bigint NOT NULL DEFAULT 300
        CONSTRAINT job_queue_alert_settings_store_lag_warning_s_check CHECK (store_lag_warning_s > 0);
ALTER TABLE job_queue_alert_settings
    ADD COLUMN IF NOT EXISTS store_lag_critical_s bigint NOT NULL DEFAULT 3600
        CONSTRAINT job_queue_alert_settings_store_lag_critical_s_check CHECK (store_lag_critical_s > 0);
COMMENT ON COLUMN job_queue_alert_settings.store_lag_warning_s IS
    'seconds a store''s oldest due job may wait (since its run_at) before "store_lag" fires for that store';
COMMENT ON COLUMN job_queue_alert_settings.store_lag_critical_s IS
    'seconds past which "store_lag" is critical';

-- The stores whose oldest due pending job has waited at least p_min_wait_s since its run_at, worst first, at most
-- p_limit of them (store_id NULL: the jobs without a store), with the priority of that job. Read from the
-- directory of store queues (sql/025): only the rows whose lower bound head_lb is old enough are probed, one
-- descent of jobs_fair_idx each for the store's real oldest due job at that priority. Stores paused as a whole
-- are left out (they wait on purpose); paused types are not.
CREATE OR REPLACE FUNCTION job_store_lag(p_min_wait_s double precision, p_limit integer)
RETURNS TABLE (store_id text, priority smallint, oldest_run_at timestamptz, wait_s double precision)
LANGUAGE sql STABLE
AS $fn$
    SELECT nullif(x.store_key, ''), x.priority, x.run_at, extract(epoch FROM now() - x.run_at)::float8
    FROM (SELECT DISTINCT ON (q.store_key) q.store_key, q.priority, h.run_at
          FROM job_store_queues q
          CROSS JOIN LATERAL (SELECT j.run_at
                              FROM jobs j
                              WHERE j.status = 'pending' AND j.priority = q.priority
                                AND coalesce(j.store_id, '') = q.store_key AND j.run_at <= now()
                              ORDER BY j.run_at, j.id
                              LIMIT 1) AS h
          WHERE q.head_lb <= now() - make_interval(secs => p_min_wait_s)
            AND h.run_at <= now() - make_interval(secs => p_min_wait_s)
            AND NOT EXISTS (SELECT 1 FROM job_pauses p
                            WHERE q.store_key <> '' AND coalesce(p.store_id, '') = q.store_key
                              AND coalesce(p.type, '') = '')
          ORDER BY q.store_key, h.run_at) AS x
    ORDER BY x.run_at, x.store_key
    LIMIT p_limit
$fn$;

-- v2's alerts (sql/058_queue_health_v2.sql describes them), and:
--   store_lag       one row per store (the 20 worst) whose oldest due job has waited store_lag_warning_s or more
--                   since its run_at: a tenant that waits while the queue as a whole looks healthy (its jobs
--                   paused by type, limited, or behind a weight); the message names the store
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
SELECT 'store_lag',
       CASE WHEN l.wait_s >= s.store_lag_critical_s THEN 'critical' ELSE 'warning' END,
       round(l.wait_s::numeric, 1),
       CASE WHEN l.wait_s >= s.store_lag_critical_s THEN s.store_lag_critical_s
            ELSE s.store_lag_warning_s END::numeric,
       format('store %s: its oldest due job (priority %s) has waited %s s since its run_at (warning at %s s, '
              'critical at %s s)', coalesce(l.store_id, '(jobs without a store)'), l.priority,
              round(l.wait_s::numeric), s.store_lag_warning_s, s.store_lag_critical_s)
FROM s CROSS JOIN LATERAL job_store_lag(s.store_lag_warning_s, 20) AS l
UNION ALL
SELECT 'alert_settings_missing', 'critical', NULL, NULL,
       'job_queue_alert_settings has no row: no other alert can fire; re-run sql/052_queue_health_v1.sql, sql/058_queue_health_v2.sql and sql/061_queue_health_v4.sql'
WHERE NOT EXISTS (SELECT 1 FROM job_queue_alert_settings);

COMMENT ON VIEW job_queue_alerts IS 'The queue alerts that fire now, with severity and message; see sql/README.md.';

RESET lock_timeout;
RESET statement_timeout;
