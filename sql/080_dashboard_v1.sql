-- The operator dashboard's tables (issue 13), v1: the action log and the sign-in throttle. Applied by Alembic
-- revision 0014_dashboard and runnable by hand:  psql -v ON_ERROR_STOP=1 -f sql/080_dashboard_v1.sql
-- Idempotent (IF NOT EXISTS everywhere). Never edit this file once released: add a _v2 file instead.
-- Locks: creates two new tables; touches no existing table.

SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- Every action taken on jobs in bulk or on the queue's controls, by the dashboard, POST /jobs/bulk or the CLI
-- (jobprocessor/bulk/log.py): when, who (the channel and, for the dashboard, the role), what, on which filter, how
-- many jobs. A bulk action writes its row first (status 'running') and updates `changed` after each of its
-- batches, so an action cut short (a restart, a database outage) still shows how far it got. Dry runs change
-- nothing and are not logged.
CREATE TABLE IF NOT EXISTS job_actions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    actor       text        NOT NULL CONSTRAINT job_actions_actor_check CHECK (actor IN ('dashboard', 'api', 'cli')),
    role        text        NOT NULL CONSTRAINT job_actions_role_check CHECK (length(role) BETWEEN 1 AND 50),
    action      text        NOT NULL CONSTRAINT job_actions_action_check CHECK (length(action) BETWEEN 1 AND 50),
    filter      jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- the bulk filter, or what the action was on
    matched     bigint,     -- jobs matching when it started (bulk actions)
    changed     bigint      NOT NULL DEFAULT 0,
    status      text        NOT NULL DEFAULT 'running'
                CONSTRAINT job_actions_status_check CHECK (status IN ('running', 'done', 'failed')),
    detail      text        CONSTRAINT job_actions_detail_check CHECK (length(detail) <= 1000)
);
COMMENT ON TABLE job_actions IS 'The action log: bulk retries and cancels, pauses, limits, schedules; see '
                                'sql/README.md.';

-- Failed dashboard sign-ins (jobprocessor/dashboard/signin.py), shared by every process and instance: a client
-- address with DASHBOARD_SIGNIN_ATTEMPTS failures in the last 10 minutes is refused before its secret is even
-- compared. Each failure first deletes a bounded batch of rows older than the window, so the table holds about the
-- last 10 minutes of failures.
CREATE TABLE IF NOT EXISTS dashboard_signin_failures (
    client  text        NOT NULL CONSTRAINT dashboard_signin_failures_client_check CHECK (length(client) <= 100),
    at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE dashboard_signin_failures IS 'Failed dashboard sign-ins of the last minutes (the sign-in throttle).';

-- Serves the throttle's count of one address's recent failures.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS dashboard_signin_failures_client_idx ON dashboard_signin_failures (client, at);
-- Serves the prune (rows past the window, oldest first).
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS dashboard_signin_failures_at_idx ON dashboard_signin_failures (at);
-- (not CONCURRENTLY: the table is created just above, in the migration's transaction, and holds minutes of rows)

RESET lock_timeout;
RESET statement_timeout;
