-- Tenant flow control, v1 (issue 11): what an operator changes at runtime -- pauses, and per-store limits and
-- weights -- and the state kept for them (each limited store's recent claims; store/type pairs whose OpenAI token
-- quota is spent), with the reads that the claim (sql/028_fair_claim_v4.sql), the wait reasons (sql/060), the lag
-- alert (sql/059) and the API share. Applied by Alembic revision 0016_flow_control and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/027_job_flow_control_v1.sql
-- Idempotent (IF NOT EXISTS, CREATE OR REPLACE). Locks: creates four new tables and their indexes; no existing
-- table is touched. Never edit this file once released: add a _v2 file instead.
--
-- WHAT EACH TABLE SAYS
--   job_pauses            a pause of a job type (store_id NULL), of a store (type NULL) or of one type of one store.
--                         Claims take no job it covers from their next round on (the claim reads the table at its
--                         start); jobs already running finish. Deleting the row resumes.
--   job_store_limits      per store (store_id NULL: every store, each on its own) and optionally per type of it:
--                           max_running               jobs of the store (of the type) running at once, counted from
--                                                     live leases (status running, lease not ended) across every
--                                                     caller and instance: a leased job not started yet counts,
--                                                     a killed call's jobs stop counting when their leases end;
--                           max_starts_per_minute     jobs of the store (of the type) claimed in any 60 s (below);
--                           weight                    the store's jobs per round of the fair claim (default 1);
--                           openai_tokens_per_minute  the store's share of the shared OpenAI budget (the limiter).
--                         A store's value is its own row's, else the every-store row's, field by field (NULL: not
--                         set there). A type's row limits that type of the store; the store's row (type NULL)
--                         limits its jobs of every type together; both apply. Jobs without a store_id are not a
--                         store here: only pauses of their type apply to them. Weights and token quotas are per
--                         store (a row with a type cannot set them).
--   job_store_starts      what claims took from stores with a starts limit: one row per claim, store and type,
--                         written by the claim that took them, read over the last minute, deleted after it.
--                         Claims, not handler starts, are counted: a claim leases only what its threads start
--                         within about half a second (the prefetch), every caller serialises on a limited store
--                         there (below), and nothing resets a claim, where started_at is reset by a retry's next
--                         claim, a rescue or a deferral; a job given back unstarted still counts in its minute.
--   job_store_quota_holds a store/type pair whose OpenAI token quota had no room for a call, until when: written by
--                         the limiter when it defers such a call (jobprocessor/ratelimit/store_quota.py), read by
--                         the claim, which leaves the pair's jobs alone until then (so a lane is not filled with
--                         jobs the quota cannot serve); an expired row means nothing.
--
-- SERVING A LIMITED STORE. A store with max_running or max_starts_per_minute (its own, per type, or the every-store
-- row's) is served by one claim at a time: the claim takes pg_try_advisory_xact_lock(20225, hashtext(store_key))
-- before it counts the store's leases and claims, and holds it until it commits; a claim that cannot get it leaves
-- the store out (another claim is serving it right now). So two callers never both count the same free slot.
-- Advisory-lock class 20225 means "this transaction is serving a limited store" (20224: sql/025's directory rows).

-- The indexes are on tables this file creates a statement earlier (small tables: a row per pause, per limit, per
-- recent claim, per held store/type), so they are built at once and CONCURRENTLY (not allowed in a transaction)
-- would buy nothing.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

CREATE TABLE IF NOT EXISTS job_pauses (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type        text        CONSTRAINT job_pauses_type_check CHECK (type <> ''),
    store_id    text        CONSTRAINT job_pauses_store_id_check CHECK (store_id <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_pauses_something_check CHECK (type IS NOT NULL OR store_id IS NOT NULL)
);
-- one pause per (store, type); also the claim's and the wait reasons' lookups of a store's pauses
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX IF NOT EXISTS job_pauses_key ON job_pauses (coalesce(store_id, ''), coalesce(type, ''));
COMMENT ON TABLE job_pauses IS 'Paused job types, stores and store/type pairs; see sql/027_job_flow_control_v1.sql.';

CREATE TABLE IF NOT EXISTS job_store_limits (
    store_id                  text        CONSTRAINT job_store_limits_store_id_check CHECK (store_id <> ''),
    type                      text        CONSTRAINT job_store_limits_type_check CHECK (type <> ''),
    max_running               integer     CONSTRAINT job_store_limits_max_running_check CHECK (max_running >= 0),
    max_starts_per_minute     integer     CONSTRAINT job_store_limits_max_starts_check
                                          CHECK (max_starts_per_minute >= 0),
    weight                    integer     CONSTRAINT job_store_limits_weight_check CHECK (weight BETWEEN 1 AND 1000),
    openai_tokens_per_minute  integer     CONSTRAINT job_store_limits_tokens_check
                                          CHECK (openai_tokens_per_minute >= 1),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_store_limits_per_store_check
        CHECK (type IS NULL OR (weight IS NULL AND openai_tokens_per_minute IS NULL))
);
-- one row per (store, type), '' standing for NULL (every store; every type): the lookups below
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX IF NOT EXISTS job_store_limits_key
    ON job_store_limits (coalesce(store_id, ''), coalesce(type, ''));
COMMENT ON TABLE job_store_limits IS
    'Per-store limits and weights (store_id NULL: every store); see sql/027_job_flow_control_v1.sql.';

CREATE TABLE IF NOT EXISTS job_store_starts (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store_key   text        NOT NULL,
    type        text        NOT NULL,
    claimed_at  timestamptz NOT NULL,
    jobs        integer     NOT NULL CONSTRAINT job_store_starts_jobs_check CHECK (jobs > 0)
);
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS job_store_starts_store_idx ON job_store_starts (store_key, claimed_at);
COMMENT ON TABLE job_store_starts IS
    'Jobs claimed per claim, store and type, for max_starts_per_minute; rows older than a minute mean nothing.';

CREATE TABLE IF NOT EXISTS job_store_quota_holds (
    store_key   text        NOT NULL,
    type        text        NOT NULL,
    until       timestamptz NOT NULL,
    PRIMARY KEY (store_key, type)
);
-- the claim's "is any hold in force?" (one descent)
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS job_store_quota_holds_until_idx ON job_store_quota_holds (until);
COMMENT ON TABLE job_store_quota_holds IS
    'Store/type pairs whose OpenAI token quota is spent, until when (claims leave their jobs alone until then).';

-- The limits that apply to each of these stores: one row for the store as a whole (type NULL) when anything is set
-- for it, and one per type with a limit of its own; each field its own row's, else the every-store row's. '' (jobs
-- without a store) has none. Index lookups of job_store_limits_key only.
CREATE OR REPLACE FUNCTION jobs_flow_limits(p_stores text[])
RETURNS TABLE (store_key text, type text, max_running integer, max_starts_per_minute integer, weight integer,
               openai_tokens_per_minute integer)
LANGUAGE sql STABLE
AS $fn$
    SELECT s.store_key, NULL::text, coalesce(o.max_running, d.max_running),
           coalesce(o.max_starts_per_minute, d.max_starts_per_minute), coalesce(o.weight, d.weight),
           coalesce(o.openai_tokens_per_minute, d.openai_tokens_per_minute)
    FROM unnest(p_stores) AS s(store_key)
    LEFT JOIN job_store_limits o ON coalesce(o.store_id, '') = s.store_key AND coalesce(o.type, '') = ''
    LEFT JOIN job_store_limits d ON coalesce(d.store_id, '') = '' AND coalesce(d.type, '') = ''
    WHERE s.store_key <> ''
      AND num_nonnulls(o.max_running, d.max_running, o.max_starts_per_minute, d.max_starts_per_minute, o.weight,
                       d.weight, o.openai_tokens_per_minute, d.openai_tokens_per_minute) > 0
    UNION ALL
    SELECT s.store_key, t.type, coalesce(o.max_running, d.max_running),
           coalesce(o.max_starts_per_minute, d.max_starts_per_minute), NULL, NULL
    FROM unnest(p_stores) AS s(store_key)
    CROSS JOIN LATERAL (SELECT DISTINCT coalesce(l.type, '') AS type
                        FROM job_store_limits l
                        WHERE coalesce(l.store_id, '') IN (s.store_key, '') AND coalesce(l.type, '') > '') AS t
    LEFT JOIN job_store_limits o ON coalesce(o.store_id, '') = s.store_key AND coalesce(o.type, '') = t.type
    LEFT JOIN job_store_limits d ON coalesce(d.store_id, '') = '' AND coalesce(d.type, '') = t.type
    WHERE s.store_key <> ''
      AND num_nonnulls(o.max_running, d.max_running, o.max_starts_per_minute, d.max_starts_per_minute) > 0
$fn$;

-- What the limits are counted against, per store and type: jobs running now (live leases: status running, lease
-- not ended; jobs_store_status_live_idx) and jobs claimed in the last minute (job_store_starts_store_idx).
CREATE OR REPLACE FUNCTION jobs_flow_usage(p_stores text[])
RETURNS TABLE (store_key text, type text, running integer, started integer)
LANGUAGE sql STABLE
AS $fn$
    SELECT s.store_key, u.type, sum(u.running)::integer, sum(u.started)::integer
    FROM unnest(p_stores) AS s(store_key)
    CROSS JOIN LATERAL (SELECT j.type, count(*) AS running, 0 AS started
                        FROM jobs j
                        -- the lease test written so no index can serve it: a store's running jobs are found by
                        -- jobs_store_status_live_idx (store_id, status); on jobs_running_lease_idx the planner
                        -- walked every live lease of every store, per store (bench/fair_claim.py flow: 10x)
                        WHERE j.store_id = s.store_key AND j.status = 'running'
                          AND j.locked_until - now() > interval '0'
                        GROUP BY j.type
                        UNION ALL
                        SELECT w.type, 0, sum(w.jobs)
                        FROM job_store_starts w
                        WHERE w.store_key = s.store_key AND w.claimed_at > now() - interval '1 minute'
                        GROUP BY w.type) AS u
    GROUP BY s.store_key, u.type
$fn$;

RESET lock_timeout;
RESET statement_timeout;
