-- The whole schema of jobprocessor, as `flask db upgrade` builds it: GENERATED, do not edit. It is for reading (what
-- exists, in one place); the schema is built by the versioned files in sql/ (sql/README.md says which is live).
-- Regenerate with `make schema` (python -m jobprocessor.schema_dump); tests/test_sql_files.py fails when it is stale.
-- Data the migrations insert (the shipped schedule, the alert thresholds) is not in it.

--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: jobs_fair_ask_v4; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.jobs_fair_ask_v4 AS (
	rank integer,
	store_key text,
	via_types text[],
	store_wanted text[],
	after_run timestamp with time zone,
	after_id bigint,
	take integer,
	head_id bigint,
	cap_types text[],
	cap_left integer[]
);

--
-- Name: jobs_fair_flow; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.jobs_fair_flow AS (
	store_key text,
	nth integer,
	paused boolean,
	excluded text[],
	weight integer,
	max_running integer,
	max_starts integer,
	cap_types text[],
	cap_running integer[],
	cap_starts integer[]
);

--
-- Name: jobs_fair_queue_v4; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.jobs_fair_queue_v4 AS (
	store_key text,
	types text[],
	via_types text[],
	store_wanted text[],
	turn_at timestamp with time zone,
	rank_wait timestamp with time zone,
	rank_pos integer,
	head_run timestamp with time zone,
	head_id bigint,
	after_run timestamp with time zone,
	after_id bigint,
	taken integer,
	owed integer,
	allowance integer,
	live boolean,
	weight integer,
	cap_types text[],
	cap_left integer[]
);

--
-- Name: cleanup_old_jobs(interval, interval, integer, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.cleanup_old_jobs(completed_older_than interval DEFAULT '30 days'::interval, failed_older_than interval DEFAULT '90 days'::interval, batch_size integer DEFAULT 10000, max_batches integer DEFAULT NULL::integer) RETURNS TABLE(archived bigint, deleted bigint, batches integer, done boolean)
    LANGUAGE plpgsql
    AS $$
DECLARE
    moved_now bigint;
    deleted_now bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'cleanup_old_jobs: batch_size must be at least 1, got %', batch_size;
    END IF;
    IF completed_older_than IS NULL OR failed_older_than IS NULL
       OR completed_older_than < interval '0' OR failed_older_than < interval '0' THEN
        RAISE EXCEPTION 'cleanup_old_jobs: retention intervals must be given and not negative';
    END IF;
    archived := 0;
    deleted := 0;
    batches := 0;
    done := false;
    LOOP
        EXIT WHEN max_batches IS NOT NULL AND batches >= max_batches;

        -- jobs_finished_idx (status, completed_at): one range scan, oldest first, stops after batch_size rows
        WITH doomed AS (
            SELECT j.id FROM jobs AS j
            WHERE j.status = 'completed' AND j.completed_at < now() - completed_older_than
            ORDER BY j.completed_at
            LIMIT batch_size
            FOR UPDATE SKIP LOCKED
        ), moved AS (
            DELETE FROM jobs AS j USING doomed WHERE j.id = doomed.id
            RETURNING j.id, j.type, j.payload, j.status, j.priority, j.store_id, j.user_id, j.run_at,
                      j.created_at, j.started_at, j.completed_at, j.attempts, j.max_attempts, j.last_error,
                      j.result, j.locked_by, j.locked_until, j.idempotency_key, j.batch_id
        ), stored AS (
            INSERT INTO jobs_archive (id, type, payload, status, priority, store_id, user_id, run_at, created_at,
                                      started_at, completed_at, attempts, max_attempts, last_error, result,
                                      locked_by, locked_until, idempotency_key, batch_id)
            SELECT * FROM moved
            -- a job restored from the archive by hand and finished again: the archive keeps its latest state
            ON CONFLICT (id) DO UPDATE SET
                type = EXCLUDED.type, payload = EXCLUDED.payload, status = EXCLUDED.status,
                priority = EXCLUDED.priority, store_id = EXCLUDED.store_id, user_id = EXCLUDED.user_id,
                run_at = EXCLUDED.run_at, created_at = EXCLUDED.created_at, started_at = EXCLUDED.started_at,
                completed_at = EXCLUDED.completed_at, attempts = EXCLUDED.attempts,
                max_attempts = EXCLUDED.max_attempts, last_error = EXCLUDED.last_error, result = EXCLUDED.result,
                locked_by = EXCLUDED.locked_by, locked_until = EXCLUDED.locked_until,
                idempotency_key = EXCLUDED.idempotency_key, batch_id = EXCLUDED.batch_id, archived_at = now()
            RETURNING 1
        )
        SELECT count(*) INTO moved_now FROM moved;

        WITH doomed AS (
            SELECT j.id FROM jobs AS j
            WHERE j.status IN ('failed', 'cancelled') AND j.completed_at < now() - failed_older_than
            ORDER BY j.completed_at
            LIMIT batch_size
            FOR UPDATE SKIP LOCKED
        )
        DELETE FROM jobs AS j USING doomed WHERE j.id = doomed.id;
        GET DIAGNOSTICS deleted_now = ROW_COUNT;

        archived := archived + moved_now;
        deleted := deleted + deleted_now;
        batches := batches + 1;
        IF moved_now < batch_size AND deleted_now < batch_size THEN
            done := true;
            EXIT;
        END IF;
    END LOOP;
    RETURN NEXT;
END
$$;

--
-- Name: FUNCTION cleanup_old_jobs(completed_older_than interval, failed_older_than interval, batch_size integer, max_batches integer); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.cleanup_old_jobs(completed_older_than interval, failed_older_than interval, batch_size integer, max_batches integer) IS 'Moves old completed jobs to jobs_archive and deletes old failed/cancelled ones in batches; returns counts. See sql/README.md.';

--
-- Name: job_batch_summary(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_batch_summary(p_batch_id text) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object(
        'batch_id', p_batch_id,
        'total', coalesce(sum(c.n), 0),
        'counts', jsonb_build_object(
            'waiting', coalesce(sum(c.n) FILTER (WHERE c.status = 'waiting'), 0),
            'pending', coalesce(sum(c.n) FILTER (WHERE c.status = 'pending'), 0),
            'running', coalesce(sum(c.n) FILTER (WHERE c.status = 'running'), 0),
            'completed', coalesce(sum(c.n) FILTER (WHERE c.status = 'completed'), 0),
            'failed', coalesce(sum(c.n) FILTER (WHERE c.status = 'failed'), 0),
            'cancelled', coalesce(sum(c.n) FILTER (WHERE c.status = 'cancelled'), 0)))
    FROM (SELECT j.status, count(*) AS n FROM jobs j WHERE j.batch_id = p_batch_id GROUP BY j.status) AS c
$$;

--
-- Name: job_store_arrivals_merge(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_arrivals_merge() RETURNS TABLE(merged_store text, merged_priority smallint)
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_sort TO 'on'
    AS $$
DECLARE
    arrival_id         bigint[];
    arrival_store      text[];
    arrival_priority   smallint[];
    arrival_type       text[];
    arrival_run_at     timestamptz[];
    widened_stores     text[];
    widened_priorities smallint[];
    done_stores        text[];
    done_priorities    smallint[];
BEGIN
    SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.store_key), '{}'),
           coalesce(array_agg(x.priority), '{}'), coalesce(array_agg(x.type), '{}'),
           coalesce(array_agg(x.run_at), '{}')
    INTO arrival_id, arrival_store, arrival_priority, arrival_type, arrival_run_at
    FROM (SELECT a.id, a.store_key, a.priority, a.type, a.run_at
          FROM job_store_arrivals a
          ORDER BY a.id
          LIMIT 10000
          FOR UPDATE OF a SKIP LOCKED) AS x;
    IF cardinality(arrival_id) = 0 THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(w.widened_store), '{}'), coalesce(array_agg(w.widened_priority), '{}')
    INTO widened_stores, widened_priorities
    FROM job_store_queues_widen(arrival_priority, arrival_store, arrival_type, arrival_run_at) AS w;
    SELECT widened_stores || coalesce(array_agg(c.created_store), '{}'),
           widened_priorities || coalesce(array_agg(c.created_priority), '{}')
    INTO done_stores, done_priorities
    FROM job_store_queues_create(arrival_priority, arrival_store, arrival_type, arrival_run_at) AS c;
    DELETE FROM job_store_arrivals x
    USING unnest(arrival_id, arrival_store, arrival_priority) AS a(id, store_key, priority)
    WHERE x.id = a.id
      AND EXISTS (SELECT 1 FROM unnest(done_stores, done_priorities) AS h(store_key, priority)
                  WHERE h.store_key = a.store_key AND h.priority = a.priority);
    RETURN QUERY SELECT u.store_key, u.priority
                 FROM unnest(widened_stores, widened_priorities) AS u(store_key, priority);
END
$$;

--
-- Name: job_store_lag(double precision, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_lag(p_min_wait_s double precision, p_limit integer) RETURNS TABLE(store_id text, priority smallint, oldest_run_at timestamp with time zone, wait_s double precision)
    LANGUAGE sql STABLE
    AS $$
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
$$;

--
-- Name: job_store_queues_cover(smallint[], text[], text[], timestamp with time zone[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_queues_cover(p_priority smallint[], p_store text[], p_type text[], p_run_at timestamp with time zone[]) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    done_store    text[];      -- the (store, priority) pairs covered so far
    done_priority smallint[];
    left_priority smallint[];  -- the elements of the pairs not held by 1.
    left_store    text[];
    left_type     text[];
    left_run_at   timestamptz[];
BEGIN
    -- 1. rows that cover the jobs: held FOR KEY SHARE until this transaction ends. Concurrent enqueues of one store
    -- share this lock; a claim serving the store (FOR NO KEY UPDATE) does not conflict with it; a claim tightening
    -- the row (FOR UPDATE) does, and then the row is skipped here.
    SELECT coalesce(array_agg(x.store_key), '{}'), coalesce(array_agg(x.priority), '{}')
    INTO done_store, done_priority
    FROM (SELECT d.store_key, d.priority
          FROM job_store_queues d
          JOIN job_store_queues_pairs(p_priority, p_store, p_type, p_run_at) AS w
            ON d.store_key = w.store_key AND d.priority = w.priority
          WHERE d.head_lb <= w.run_at
            AND (d.types IS NULL
                 OR w.types IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM unnest(w.types, w.type_heads) AS j(type, run_at)
                                    WHERE NOT job_store_queues_covers(d.head_lb, d.types, d.type_heads, j.type,
                                                                      j.run_at)))
          ORDER BY d.store_key, d.priority
          FOR KEY SHARE OF d SKIP LOCKED) AS x;
    SELECT coalesce(array_agg(u.priority), '{}'), coalesce(array_agg(u.store_key), '{}'),
           coalesce(array_agg(u.type), '{}'), coalesce(array_agg(u.run_at), '{}')
    INTO left_priority, left_store, left_type, left_run_at
    FROM unnest(p_priority, p_store, p_type, p_run_at) AS u(priority, store_key, type, run_at)
    WHERE NOT EXISTS (SELECT 1 FROM unnest(done_store, done_priority) AS h(store_key, priority)
                      WHERE h.store_key = u.store_key AND h.priority = u.priority);
    IF cardinality(left_store) = 0 THEN
        RETURN;
    END IF;
    -- 2. rows that start later than the jobs or lack their type (a store that ran dry, a job moved earlier, a new
    -- type), 3. a store's first row at the priority -- each only if it can be done without waiting
    SELECT done_store || coalesce(array_agg(w.widened_store), '{}'),
           done_priority || coalesce(array_agg(w.widened_priority), '{}')
    INTO done_store, done_priority
    FROM job_store_queues_widen(left_priority, left_store, left_type, left_run_at) AS w;
    SELECT done_store || coalesce(array_agg(c.created_store), '{}'),
           done_priority || coalesce(array_agg(c.created_priority), '{}')
    INTO done_store, done_priority
    FROM job_store_queues_create(left_priority, left_store, left_type, left_run_at) AS c;
    -- 4. the rest (a row another transaction is tightening, widening or creating) become arrivals
    INSERT INTO job_store_arrivals (store_key, priority, type, run_at)
    SELECT u.store_key, u.priority, u.type, u.run_at
    FROM unnest(left_priority, left_store, left_type, left_run_at) AS u(priority, store_key, type, run_at)
    WHERE NOT EXISTS (SELECT 1 FROM unnest(done_store, done_priority) AS h(store_key, priority)
                      WHERE h.store_key = u.store_key AND h.priority = u.priority);
END
$$;

--
-- Name: job_store_queues_covers(timestamp with time zone, text[], timestamp with time zone[], text, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_queues_covers(p_head_lb timestamp with time zone, p_types text[], p_type_heads timestamp with time zone[], p_job_type text, p_run_at timestamp with time zone) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT p_head_lb <= p_run_at
           AND (p_types IS NULL OR coalesce(p_type_heads[array_position(p_types, p_job_type)] <= p_run_at, false))
$$;

--
-- Name: job_store_queues_create(smallint[], text[], text[], timestamp with time zone[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_queues_create(p_priority smallint[], p_store text[], p_type text[], p_run_at timestamp with time zone[]) RETURNS TABLE(created_store text, created_priority smallint)
    LANGUAGE sql
    AS $$
    INSERT INTO job_store_queues AS d (store_key, priority, head_lb, types, type_heads, served_at, served_pos)
    SELECT w.store_key, w.priority, w.run_at, w.types, w.type_heads, coalesce(t.served_at, '-infinity'),
           coalesce(t.served_pos, 0)
    FROM job_store_queues_pairs(p_priority, p_store, p_type, p_run_at) AS w
    LEFT JOIN LATERAL (SELECT o.served_at, o.served_pos FROM job_store_queues o
                       WHERE o.store_key = w.store_key ORDER BY o.served_at DESC LIMIT 1) AS t ON true
    WHERE NOT EXISTS (SELECT 1 FROM job_store_queues c
                      WHERE c.store_key = w.store_key AND c.priority = w.priority)
      AND pg_try_advisory_xact_lock(20224, hashtext(w.store_key || '/' || w.priority))
    ORDER BY w.store_key, w.priority
    ON CONFLICT (store_key, priority) DO NOTHING
    RETURNING d.store_key, d.priority
$$;

--
-- Name: job_store_queues_exact(smallint, text, text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_queues_exact(p_priority smallint, p_store text, p_candidate_types text[]) RETURNS TABLE(exact_head_lb timestamp with time zone, exact_types text[], exact_type_heads timestamp with time zone[])
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce((SELECT j.run_at FROM jobs j
                     WHERE j.status = 'pending' AND j.priority = p_priority AND coalesce(j.store_id, '') = p_store
                     ORDER BY j.run_at
                     LIMIT 1), 'infinity'),
           coalesce(array_agg(h.type ORDER BY h.type) FILTER (WHERE h.head IS NOT NULL), '{}'),
           coalesce(array_agg(h.head ORDER BY h.type) FILTER (WHERE h.head IS NOT NULL), '{}')
    FROM unnest(p_candidate_types) AS t(type)
    CROSS JOIN LATERAL (SELECT t.type,
                               (SELECT j.run_at FROM jobs j
                                WHERE j.status = 'pending' AND j.type = t.type AND j.priority = p_priority
                                  AND coalesce(j.store_id, '') = p_store
                                ORDER BY j.run_at
                                LIMIT 1) AS head) AS h
$$;

--
-- Name: job_store_queues_pairs(smallint[], text[], text[], timestamp with time zone[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_queues_pairs(p_priority smallint[], p_store text[], p_type text[], p_run_at timestamp with time zone[]) RETURNS TABLE(store_key text, priority smallint, run_at timestamp with time zone, types text[], type_heads timestamp with time zone[])
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT t.store_key, t.priority, min(t.run_at),
           CASE WHEN bool_or(t.type IS NULL) THEN NULL ELSE array_agg(t.type ORDER BY t.type) END,
           CASE WHEN bool_or(t.type IS NULL) THEN NULL ELSE array_agg(t.run_at ORDER BY t.type) END
    FROM (SELECT u.store_key, u.priority, u.type, min(u.run_at) AS run_at
          FROM unnest(p_priority, p_store, p_type, p_run_at) AS u(priority, store_key, type, run_at)
          GROUP BY u.store_key, u.priority, u.type) AS t
    GROUP BY t.store_key, t.priority
$$;

--
-- Name: job_store_queues_serve(text[], integer[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_queues_serve(p_store text[], p_pos integer[]) RETURNS void
    LANGUAGE sql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_sort TO 'on'
    AS $$
    WITH mine AS (
        SELECT q.store_key, q.priority, s.pos
        FROM job_store_queues q
        JOIN unnest(p_store, p_pos) AS s(store_key, pos) ON s.store_key = q.store_key
        ORDER BY q.store_key, q.priority
        FOR NO KEY UPDATE OF q SKIP LOCKED
    )
    UPDATE job_store_queues q SET served_at = greatest(q.served_at, now()), served_pos = m.pos
    FROM mine m
    WHERE q.store_key = m.store_key AND q.priority = m.priority
$$;

--
-- Name: job_store_queues_tighten(smallint[], text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_queues_tighten(p_priority smallint[], p_store text[]) RETURNS integer
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_sort TO 'on'
    AS $$
DECLARE
    stale_priorities  smallint[];
    stale_stores      text[];
    locked_priorities smallint[];
    locked_stores     text[];
    written           integer;
BEGIN
    -- the rows that would change, read without a lock (most rows a claim finds empty already say so)
    SELECT coalesce(array_agg(q.priority), '{}'), coalesce(array_agg(q.store_key), '{}')
    INTO stale_priorities, stale_stores
    FROM job_store_queues q
    JOIN unnest(p_priority, p_store) AS s(priority, store_key)
      ON q.priority = s.priority AND q.store_key = s.store_key
    CROSS JOIN LATERAL job_store_queues_exact(q.priority, q.store_key,
                                              coalesce(q.types, (SELECT jobs_pending_types()))) AS e
    WHERE (q.head_lb, q.types, q.type_heads)
          IS DISTINCT FROM (e.exact_head_lb, e.exact_types, e.exact_type_heads);
    IF cardinality(stale_stores) = 0 THEN
        RETURN 0;
    END IF;
    SELECT coalesce(array_agg(x.priority), '{}'), coalesce(array_agg(x.store_key), '{}')
    INTO locked_priorities, locked_stores
    FROM (SELECT q.priority, q.store_key
          FROM job_store_queues q
          JOIN unnest(stale_priorities, stale_stores) AS s(priority, store_key)
            ON q.priority = s.priority AND q.store_key = s.store_key
          ORDER BY q.priority, q.store_key
          FOR UPDATE OF q SKIP LOCKED) AS x;
    IF cardinality(locked_stores) = 0 THEN
        RETURN 0;
    END IF;
    -- a new statement: a snapshot taken after the lock
    UPDATE job_store_queues q
    SET head_lb = n.exact_head_lb, types = n.exact_types, type_heads = n.exact_type_heads
    FROM (SELECT o.priority, o.store_key, e.exact_head_lb, e.exact_types, e.exact_type_heads
          FROM job_store_queues o
          JOIN unnest(locked_priorities, locked_stores) AS s(priority, store_key)
            ON o.priority = s.priority AND o.store_key = s.store_key
          CROSS JOIN LATERAL job_store_queues_exact(o.priority, o.store_key,
                                                    coalesce(o.types, (SELECT jobs_pending_types()))) AS e) AS n
    WHERE q.priority = n.priority AND q.store_key = n.store_key
      AND (q.head_lb, q.types, q.type_heads)
          IS DISTINCT FROM (n.exact_head_lb, n.exact_types, n.exact_type_heads);
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;

--
-- Name: job_store_queues_widen(smallint[], text[], text[], timestamp with time zone[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.job_store_queues_widen(p_priority smallint[], p_store text[], p_type text[], p_run_at timestamp with time zone[]) RETURNS TABLE(widened_store text, widened_priority smallint)
    LANGUAGE sql
    AS $$
    WITH jobs_in AS (
        SELECT * FROM job_store_queues_pairs(p_priority, p_store, p_type, p_run_at)
    ), mine AS (
        SELECT d.store_key, d.priority
        FROM job_store_queues d
        JOIN jobs_in w ON d.store_key = w.store_key AND d.priority = w.priority
        ORDER BY d.store_key, d.priority
        FOR NO KEY UPDATE OF d SKIP LOCKED
    )
    UPDATE job_store_queues d
    SET head_lb = least(d.head_lb, w.run_at),
        (types, type_heads) = (
            -- every type of the row and of the jobs, each with the earlier of its two heads; not known stays so
            SELECT CASE WHEN d.types IS NULL OR w.types IS NULL THEN NULL
                        ELSE array_agg(m.type ORDER BY m.type) END,
                   CASE WHEN d.types IS NULL OR w.types IS NULL THEN NULL
                        ELSE array_agg(m.head ORDER BY m.type) END
            FROM (SELECT x.type, min(x.head) AS head
                  FROM (SELECT * FROM unnest(d.types, d.type_heads)
                        UNION ALL
                        SELECT * FROM unnest(w.types, w.type_heads)) AS x(type, head)
                  GROUP BY x.type) AS m)
    FROM mine m
    JOIN jobs_in w ON w.store_key = m.store_key AND w.priority = m.priority
    WHERE d.store_key = m.store_key AND d.priority = m.priority
    RETURNING d.store_key, d.priority
$$;

--
-- Name: jobs_fair_claim(integer, text[], integer, bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_fair_claim(p_limit integer, p_types text[] DEFAULT NULL::text[], p_max_per_store integer DEFAULT NULL::integer, p_skip bigint[] DEFAULT '{}'::bigint[]) RETURNS TABLE(job_id bigint, claim_order integer)
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    SET enable_seqscan TO 'off'
    SET enable_bitmapscan TO 'off'
    SET enable_sort TO 'off'
    AS $$
DECLARE
    wanted            text[];       -- the types this claim takes: p_types sorted, without duplicates, less the
                                    -- paused ones (NULL: all)
    skip_ids          bigint[] := coalesce(p_skip, '{}');
    slots_left        integer := p_limit;
    -- 0. flow control
    paused_types      text[];       -- types paused everywhere
    flow_stores       boolean;      -- something is set per store: the stores read are checked (3a+)
    flow_keys         text[];       -- the stores anything is set for (NULL: look every store up -- an every-store
                                    -- limit, or more than 1,000 of them)
    flow_pauses       boolean;      -- (v9) a pause of a store, or of a type of one, is set: the plan looks them up
    flow_holds        boolean;      -- (v9) a quota hold is in force: the plan looks them up
    caps_now          boolean;      -- (v9) a per-type limit is counted in this claim: the stores' caps are read
    plan              jobs_fair_flow[];  -- what flow control says about the stores of the chunk being read
    locked_now        text[];       -- stores of the chunk to count that this claim now serves alone
    busy_now          text[];       -- ... and that another claim is serving: they take nothing in this one
    ledger_stores     text[] := '{}';    -- the stores counted in this claim (each once), with the jobs each may
    ledger_left       integer[] := '{}'; -- take in it (NULL: no limit as a whole; 0: another claim serves it)
    ledger_cap_stores text[] := '{}';    -- the same per type with a limit of its own
    ledger_cap_types  text[] := '{}';
    ledger_cap_left   integer[] := '{}';
    starts_stores     text[] := '{}';    -- the stores counted that have a starts limit: their claims are recorded
    busy_stores       text[] := '{}';    -- the stores counted as served by another claim (0 for this one)
    held_stores       text[];       -- of those, the ones with a due job at this level, and their rank
    held_waits        timestamptz[];
    held_poss         integer[];
    held_heads        timestamptz[];
    passed_stores     text[] := '{}';    -- held stores ranking before the last store served at their level
    -- 1. merge arrivals
    widened_levels    smallint[] := '{}';  -- rows this claim widened: it must not tighten them (sql/025)
    widened_stores    text[] := '{}';
    arrival_levels    smallint[];   -- levels with arrivals left: their stores are read beside the directory
    -- 2. levels
    cur_level         smallint;     -- the level being shared out
    horizon           timestamptz;  -- a read of the directory skips rows whose wait_from is later (sql/026)
    -- 3. read the directory (per level)
    arrival_chunk     jobs_fair_queue_v4[];  -- the stores of the arrivals left at the level: the first chunk
    from_arrivals     boolean;
    by_type_bound     boolean;      -- reading in order of the one wanted type's bounds (3a') rather than wait order
    more_rows         boolean;      -- the level may have rows not read yet
    after_wait        timestamptz;  -- keyset cursor: the order key of the last row read (sql/026)
    after_pos         integer;
    after_head        timestamptz;
    after_store       text;
    chunk_size        integer;
    rows_read         integer;
    rows_out_of_order integer;
    last_wait         timestamptz;
    last_pos          integer;
    last_head         timestamptz;
    last_store        text;
    read_stores       text[];       -- stores read at this level
    chunk             jobs_fair_queue_v4[];  -- the rows just read that may hold a wanted type
    chunk_stores      text[];
    chunk_unknown     text[];       -- of those, the rows whose types are not known: tightened in 6.
    chunk_empty       text[];       -- the stores read with nothing wanted due: tightened in 6.
    candidates        jobs_fair_queue_v4[];
    pool              jobs_fair_queue_v4[];  -- candidates not placed yet
    tighten_levels    smallint[] := '{}';
    tighten_stores    text[] := '{}';
    -- 4./5. the level's queues in rank order, and the steps that give them jobs
    queues            jobs_fair_queue_v4[];
    one               jobs_fair_queue_v4;
    live_queues       integer;
    live_weight       integer;      -- the sum of the live queues' weights: the slots one round takes
    step              text;
    partial_at        integer;      -- in a partial round: the next queue to ask (NULL: none under way)
    round_share       integer;
    asked             integer;
    asks              jobs_fair_ask_v4[];
    step_ranks        integer[];    -- the queues the step asked: their liveness is settled after it
    got_ranks         integer[];    -- what the step got, in (rank, run_at, id) order
    got_ids           bigint[];
    got_runs          timestamptz[];
    got_types         text[];
    deferred_ranks    integer[];    -- 5.: jobs found for stores another caller is serving, taken last
    deferred_ids      bigint[];
    deferred_runs     timestamptz[];
    deferred_types    text[];
    pk_ranks          integer[];    -- 5. (v7): the heads a partial round got by primary key alone
    pk_ids            bigint[];
    pk_runs           timestamptz[];
    pk_types          text[];
    aside_ranks       integer[];    -- 5.: the queues of the jobs this step set aside, one entry per job
    taking            integer;      -- 4./5.: how many of the jobs the step got it takes (slots left)
    took              integer;      -- ... per queue: how many, and the place of its last one in got_*
    took_last         integer;
    r                 integer;
    -- every job claimed, with its place in the claim order (round, which holds its level: v8; rank; its place in its
    -- store's round)
    claimed_ids       bigint[] := '{}';
    claimed_stores    text[] := '{}';
    -- (v8: a job's level is in its round -- each level's rounds follow the levels' before it: round_base -- rather
    -- than an array of its own; and its type is kept only when flow control is on, the one reader of it)
    claimed_types     text[] := '{}';
    claimed_rounds    integer[] := '{}';
    round_base        integer := 0;   -- the rounds of the levels already shared out
    level_rounds      integer;        -- the rounds of this level that jobs were taken in
    claimed_ranks     integer[] := '{}';
    claimed_nths      integer[] := '{}';
    turn_stores       text[];       -- 6.: the stores given a turn, in key order, and where each stands
    turn_poss         integer[];
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RETURN;
    END IF;
    IF p_types IS NOT NULL THEN
        wanted := ARRAY(SELECT DISTINCT t.type FROM unnest(p_types) AS t(type) WHERE t.type IS NOT NULL
                        ORDER BY t.type);
        IF cardinality(wanted) = 0 THEN
            RETURN;  -- no type wanted: nothing to claim
        END IF;
    END IF;

    -- 0'. ONE STORE: the rule's answer in one read when nothing but one store's jobs could matter (asked only when
    -- the directory's first and last stores are the same -- two index probes -- which it checks again, with the rest:
    -- the call itself cost a claim from many stores 0.05 ms)
    IF (SELECT min(q.store_key) = max(q.store_key) FROM job_store_queues q) THEN
        RETURN QUERY SELECT * FROM jobs_fair_claim_one_store(p_limit, wanted, p_max_per_store, skip_ids);
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    ---------------------------------------------------------------------------------------------------------------
    -- 0. FLOW CONTROL: what is configured (the tables are small: index probes)
    ---------------------------------------------------------------------------------------------------------------
    -- (one statement: the keys are read only when something is set per store, and no every-store limit is;
    -- v9: and whether a store's pause or a quota hold is set, so the plan looks those up only then)
    SELECT ARRAY(SELECT p.type FROM job_pauses p WHERE coalesce(p.store_id, '') = ''),
           s.pauses OR s.limits OR s.holds, s.pauses, s.holds,
           CASE WHEN (s.pauses OR s.limits OR s.holds)
                     AND NOT EXISTS (SELECT 1 FROM job_store_limits l WHERE coalesce(l.store_id, '') = '') THEN
               ARRAY(SELECT k.store_key
                     FROM (SELECT p.store_id FROM job_pauses p WHERE p.store_id IS NOT NULL
                           UNION  -- (a store once, however many rows it has)
                           SELECT l.store_id FROM job_store_limits l WHERE l.store_id IS NOT NULL
                           UNION
                           SELECT h.store_key FROM job_store_quota_holds h WHERE h.until > now()) AS k(store_key)
                     LIMIT 1001)
           END
    INTO paused_types, flow_stores, flow_pauses, flow_holds, flow_keys
    FROM (SELECT EXISTS (SELECT 1 FROM job_pauses p WHERE coalesce(p.store_id, '') > '') AS pauses,
                 EXISTS (SELECT 1 FROM job_store_limits) AS limits,
                 EXISTS (SELECT 1 FROM job_store_quota_holds h WHERE h.until > now()) AS holds
          OFFSET 0) AS s;
    IF cardinality(flow_keys) > 1000 THEN
        flow_keys := NULL;  -- (a long array would cost more to search per row than the look-ups it saves)
    END IF;
    IF cardinality(paused_types) > 0 THEN
        wanted := ARRAY(SELECT t.type FROM unnest(coalesce(wanted, jobs_pending_types())) AS t(type)
                        WHERE t.type <> ALL (paused_types) ORDER BY t.type);
        IF cardinality(wanted) = 0 THEN
            RETURN;  -- every type it would take is paused
        END IF;
    END IF;

    ---------------------------------------------------------------------------------------------------------------
    -- 1. MERGE ARRIVALS (there are none, most of the time)
    ---------------------------------------------------------------------------------------------------------------
    arrival_levels := '{}';
    IF EXISTS (SELECT 1 FROM job_store_arrivals) THEN
        SELECT coalesce(array_agg(m.merged_priority), '{}'), coalesce(array_agg(m.merged_store), '{}')
        INTO widened_levels, widened_stores
        FROM job_store_arrivals_merge() AS m;
        SELECT coalesce(array_agg(DISTINCT a.priority), '{}')
        INTO arrival_levels
        FROM job_store_arrivals a
        WHERE wanted IS NULL OR a.type IS NULL OR a.type = ANY (wanted);
    END IF;

    <<levels>>
    LOOP
        -----------------------------------------------------------------------------------------------------------
        -- 2. LEVELS: the next one with a row that may hold a due job, or an arrival left
        -----------------------------------------------------------------------------------------------------------
        EXIT levels WHEN slots_left = 0;
        horizon := clock_timestamp();
        SELECT least((SELECT q.priority
                      FROM job_store_queues q
                      WHERE q.priority > coalesce(cur_level, 0) AND q.wait_from <= horizon
                      ORDER BY q.priority
                      LIMIT 1),
                     (SELECT min(u.priority) FROM unnest(arrival_levels) AS u(priority)
                      WHERE u.priority > coalesce(cur_level, 0)))
        INTO cur_level;
        EXIT levels WHEN cur_level IS NULL;

        queues := '{}';
        level_rounds := 0;
        held_stores := '{}'; held_waits := '{}'; held_poss := '{}'; held_heads := '{}';
        live_queues := 0;
        live_weight := 0;
        partial_at := NULL;
        pool := '{}';
        read_stores := '{}';
        arrival_chunk := '{}';
        by_type_bound := false;
        more_rows := true;
        after_wait := '-infinity'; after_pos := -2147483648; after_head := '-infinity'; after_store := '';
        IF cur_level = ANY (arrival_levels) THEN
            -- the stores of the arrivals left at this level: read first, as a chunk of their own (their row, if
            -- any, may not cover the arrival's job yet), into the pool; not read again from the directory here
            SELECT coalesce(array_agg(c.store_key), '{}'),
                   coalesce(array_agg(ROW(c.store_key, c.types, c.via_types, NULL, c.served_at, NULL,
                                          coalesce(c.served_pos, 0), NULL, NULL, '-infinity', 0, 0, 0, NULL, false, 1,
                                          NULL, NULL)::jobs_fair_queue_v4), '{}')
            INTO read_stores, arrival_chunk
            FROM (SELECT e.store_key, o.served_at, o.served_pos, k.types, v.via_types
                  FROM (SELECT a.store_key,
                               CASE WHEN bool_or(a.type IS NULL) THEN NULL
                                    ELSE array_agg(DISTINCT a.type) END AS types
                        FROM job_store_arrivals a
                        WHERE a.priority = cur_level
                        GROUP BY a.store_key) AS e
                  LEFT JOIN job_store_queues o ON o.store_key = e.store_key AND o.priority = cur_level
                  CROSS JOIN LATERAL (SELECT CASE WHEN o.store_key IS NULL THEN e.types
                                                  WHEN o.types IS NULL OR e.types IS NULL THEN NULL
                                                  ELSE o.types || e.types END AS types) AS k
                  CROSS JOIN LATERAL (SELECT CASE WHEN wanted IS NULL OR k.types <@ wanted THEN NULL
                                                  ELSE coalesce(k.types, wanted) END AS via_types) AS v
                  WHERE wanted IS NULL OR k.types IS NULL OR k.types && wanted) AS c;
        END IF;

        <<steps>>
        LOOP
            step := CASE
                WHEN slots_left = 0 THEN 'level done'
                -- whole rounds share the slots among every store of the level: read on until all are known, unless
                -- the stores placed need more than the slots left for a round (then a partial round follows)
                WHEN more_rows AND partial_at IS NULL AND live_weight <= slots_left THEN 'read the directory'
                -- a partial round that has asked every store placed so far needs the next ones
                WHEN more_rows AND partial_at > cardinality(queues) THEN 'read the directory'
                WHEN partial_at IS NULL AND live_queues = 0 THEN 'level done'
                WHEN partial_at IS NULL AND live_weight <= slots_left THEN 'whole rounds'
                WHEN partial_at IS NULL OR partial_at <= cardinality(queues) THEN 'partial round'
                ELSE 'deferred stores'  -- the partial round has asked every store of the level
            END;
            EXIT steps WHEN step = 'level done';
            asks := '{}';
            step_ranks := '{}';
            got_ranks := '{}'; got_ids := '{}'; got_runs := '{}'; got_types := '{}';

            IF step = 'read the directory' THEN
                -----------------------------------------------------------------------------------------------------
                -- 3. READ THE DIRECTORY: the next chunk (the arrivals' stores first), flow control on it, the heads
                -- of its stores, and the stores now certain to rank first (sql/026 explains 3a and 3a')
                -----------------------------------------------------------------------------------------------------
                from_arrivals := cardinality(arrival_chunk) > 0;
                IF from_arrivals THEN
                    chunk := arrival_chunk;
                    arrival_chunk := '{}';
                    chunk_unknown := '{}';
                ELSE
                    horizon := clock_timestamp();
                    -- as many rows as stores are still needed (+ 8, + the candidates not placed yet); with weights,
                    -- as many as the slots a round of the stores placed does not cover
                    chunk_size := CASE WHEN partial_at IS NULL THEN slots_left - live_weight + 1 ELSE slots_left END
                                  + 8 + cardinality(pool);
                    IF NOT by_type_bound THEN
                        -- 3a. in wait order
                        WITH chunk AS (
                            SELECT q.store_key, q.types, q.type_heads, q.served_at, q.served_pos, q.head_lb,
                                   q.wait_from,
                                   row_number() OVER (ORDER BY q.wait_from, q.served_pos, q.head_lb, q.store_key)
                                       AS nth
                            FROM (SELECT q.store_key, q.types, q.type_heads, q.served_at, q.served_pos, q.head_lb,
                                         q.wait_from
                                  FROM job_store_queues q
                                  WHERE q.priority = cur_level AND q.wait_from <= horizon
                                    AND (q.wait_from, q.served_pos, q.head_lb, q.store_key)
                                        > (after_wait, after_pos, after_head, after_store)
                                    AND (wanted IS NULL OR q.types IS NULL OR q.types && wanted)
                                    AND q.store_key NOT IN (SELECT unnest(read_stores))
                                  ORDER BY q.wait_from, q.served_pos, q.head_lb, q.store_key
                                  LIMIT chunk_size) AS q
                        ), edge AS MATERIALIZED (  -- (computed once, not once per row below)
                            -- (v9: the last row read, found by its place, not by four sorts of the chunk)
                            SELECT c.wait_from AS e_wait, c.served_pos AS e_pos, c.head_lb AS e_head,
                                   c.store_key AS e_store
                            FROM chunk c
                            WHERE c.nth = (SELECT max(l.nth) FROM chunk l)
                        )
                        SELECT count(*)::integer,
                               coalesce(array_agg(ROW(c.store_key, c.types,
                                                      CASE WHEN wanted IS NULL OR c.types <@ wanted THEN NULL
                                                           ELSE coalesce(c.types, wanted) END,
                                                      NULL, c.served_at, NULL, c.served_pos, NULL, NULL, '-infinity',
                                                      0, 0, 0, NULL, false, 1, NULL, NULL)::jobs_fair_queue_v4
                                                  ORDER BY c.nth), '{}'),
                               coalesce(array_agg(c.store_key) FILTER (WHERE c.types IS NULL), '{}'),
                               count(*) FILTER (WHERE cardinality(wanted) = 1 AND c.types && wanted
                                                  AND (greatest(c.type_heads[array_position(c.types, wanted[1])],
                                                                c.served_at),
                                                       c.served_pos, c.type_heads[array_position(c.types, wanted[1])],
                                                       c.store_key) >= (e.e_wait, e.e_pos, e.e_head, e.e_store)
                                                )::integer,
                               min(e.e_wait), min(e.e_pos), min(e.e_head), min(e.e_store)
                        INTO rows_read, chunk, chunk_unknown, rows_out_of_order, last_wait, last_pos, last_head,
                             last_store
                        FROM chunk c
                        CROSS JOIN edge e;
                    ELSE
                        -- 3a'. in order of each row's bound for the one wanted type: greatest(its type head, turn)
                        WITH chunk AS (
                            SELECT q.store_key, q.types, q.served_at, q.served_pos, q.type_head, q.bound_wait,
                                   row_number() OVER (ORDER BY q.bound_wait, q.served_pos, q.type_head, q.store_key)
                                       AS nth
                            FROM (SELECT q.store_key, q.types, q.served_at, q.served_pos, b.type_head,
                                         greatest(b.type_head, q.served_at) AS bound_wait
                                  FROM job_store_queues q
                                  CROSS JOIN LATERAL (SELECT CASE WHEN q.types IS NULL THEN q.head_lb
                                                                  ELSE q.type_heads[array_position(q.types, wanted[1])]
                                                             END AS type_head) AS b
                                  WHERE q.priority = cur_level AND q.wait_from <= horizon
                                    AND (q.types IS NULL OR q.types && wanted)
                                    AND (greatest(b.type_head, q.served_at), q.served_pos, b.type_head, q.store_key)
                                        > (after_wait, after_pos, after_head, after_store)
                                    AND q.store_key NOT IN (SELECT unnest(read_stores))
                                  ORDER BY greatest(b.type_head, q.served_at), q.served_pos, b.type_head, q.store_key
                                  LIMIT chunk_size) AS q
                        )
                        SELECT count(*)::integer,
                               coalesce(array_agg(ROW(c.store_key, c.types, wanted, NULL, c.served_at, NULL,
                                                      c.served_pos, NULL, NULL, '-infinity', 0, 0, 0, NULL, false, 1,
                                                      NULL, NULL)::jobs_fair_queue_v4 ORDER BY c.nth), '{}'),
                               '{}', 0,
                               (array_agg(c.bound_wait ORDER BY c.nth DESC))[1],
                               (array_agg(c.served_pos ORDER BY c.nth DESC))[1],
                               (array_agg(c.type_head ORDER BY c.nth DESC))[1],
                               (array_agg(c.store_key ORDER BY c.nth DESC))[1]
                        INTO rows_read, chunk, chunk_unknown, rows_out_of_order, last_wait, last_pos, last_head,
                             last_store
                        FROM chunk c;
                    END IF;
                    more_rows := rows_read = chunk_size;
                    IF more_rows AND 2 * rows_out_of_order > cardinality(chunk) THEN
                        -- most of these rows could not be placed now: read the level again by the type's bounds
                        -- (3a'), without probing these (3a' reads them again, in their order)
                        by_type_bound := true;
                        after_wait := '-infinity'; after_pos := -2147483648; after_head := '-infinity';
                        after_store := '';
                        CONTINUE steps;
                    END IF;
                    IF more_rows THEN
                        after_wait := last_wait; after_pos := last_pos; after_head := last_head;
                        after_store := last_store;
                    ELSE  -- every row read: nothing left to bound
                        after_wait := 'infinity'; after_pos := 2147483647; after_head := 'infinity';
                        after_store := '';
                    END IF;
                    chunk_stores := ARRAY(SELECT c.store_key FROM unnest(chunk) AS c);
                    read_stores := read_stores || chunk_stores;
                END IF;

                IF flow_stores AND cardinality(chunk) > 0 THEN
                    -------------------------------------------------------------------------------------------------
                    -- 3a+. FLOW CONTROL on the chunk: what is configured for its stores, and the try-locks of the
                    -- stores to count (each counted once per claim, only if no other claim is serving it); the counts
                    -- and what they leave each store are in the statement of 3b, after the locks
                    -------------------------------------------------------------------------------------------------
                    IF flow_keys IS NULL THEN
                        -- an every-store row, or more than 1,000 stores set: every store of the chunk is looked up,
                        -- each with the every-store row's values where its own are not set (v4's plan, as in v8)
                        SELECT coalesce(array_agg(x.f), '{}'),
                               coalesce(array_agg((x.f).store_key) FILTER (WHERE x.got), '{}'),
                               coalesce(array_agg((x.f).store_key) FILTER (WHERE NOT x.got), '{}'),
                               coalesce(bool_or(x.got AND (x.f).cap_types IS NOT NULL), false)
                        INTO plan, locked_now, busy_now, caps_now
                        FROM (SELECT f,
                                     CASE WHEN NOT f.paused AND f.store_key <> ALL (ledger_stores)
                                               AND (f.max_running IS NOT NULL OR f.max_starts IS NOT NULL
                                                    OR f.cap_types IS NOT NULL)
                                          THEN pg_try_advisory_xact_lock(20225, hashtext(f.store_key))
                                     END AS got
                              FROM jobs_fair_flow_plan(chunk, wanted) AS f) AS x;
                    ELSE
                        -- (v9: the plan inline, of the chunk's stores that are set (flow_keys, hashed), each looked
                        -- up once per table: no every-store row exists, so a store's limits are its own rows (v4's
                        -- jobs_flow_limits() probed the every-store row and each type's rows again, per store);
                        -- the pauses and the quota holds only when some are set per store; and only the stores
                        -- the plan changes anything for: a pause, a type left out, a weight other than 1, a limit)
                        SELECT coalesce(array_agg(x.f), '{}'),
                               coalesce(array_agg((x.f).store_key) FILTER (WHERE x.got), '{}'),
                               coalesce(array_agg((x.f).store_key) FILTER (WHERE NOT x.got), '{}'),
                               coalesce(bool_or(x.got AND (x.f).cap_types IS NOT NULL), false)
                        INTO plan, locked_now, busy_now, caps_now
                        FROM (SELECT ROW(f.*)::jobs_fair_flow AS f,
                                     CASE WHEN NOT f.paused AND f.store_key <> ALL (ledger_stores)
                                               AND (f.max_running IS NOT NULL OR f.max_starts IS NOT NULL
                                                    OR f.cap_types IS NOT NULL)
                                          THEN pg_try_advisory_xact_lock(20225, hashtext(f.store_key))
                                     END AS got
                              FROM (SELECT c.store_key, c.nth::integer AS nth, coalesce(p.paused, false) AS paused,
                                           coalesce(p.types, '{}') || coalesce(h.types, '{}') AS excluded, l.weight,
                                           l.max_running, l.max_starts, l.cap_types, l.cap_running, l.cap_starts
                                    FROM unnest(chunk) WITH ORDINALITY AS c(store_key, types, via_types, store_wanted,
                                                                            turn_at, rank_wait, rank_pos, head_run,
                                                                            head_id, after_run, after_id, taken,
                                                                            owed, allowance, live, weight, cap_types,
                                                                            cap_left, nth)
                                    CROSS JOIN LATERAL (SELECT bool_or(x.type IS NULL) AS paused,
                                                               array_agg(x.type) FILTER (WHERE x.type IS NOT NULL)
                                                                   AS types
                                                        FROM job_pauses x
                                                        WHERE flow_pauses AND coalesce(x.store_id, '') = c.store_key
                                                        ) AS p
                                    CROSS JOIN LATERAL (SELECT array_agg(x.type) AS types
                                                        FROM job_store_quota_holds x
                                                        WHERE flow_holds AND x.store_key = c.store_key
                                                          AND x.until > now()) AS h
                                    CROSS JOIN LATERAL (
                                        -- (jobs_flow_limits() of sql/027 without an every-store row: the store's
                                        -- row, and its types' rows with a limit, of the types the claim wants)
                                        SELECT max(x.weight) FILTER (WHERE x.type IS NULL) AS weight,
                                               max(x.max_running) FILTER (WHERE x.type IS NULL) AS max_running,
                                               max(x.max_starts_per_minute) FILTER (WHERE x.type IS NULL)
                                                   AS max_starts,
                                               array_agg(x.type) FILTER (WHERE x.type IS NOT NULL) AS cap_types,
                                               array_agg(x.max_running) FILTER (WHERE x.type IS NOT NULL)
                                                   AS cap_running,
                                               array_agg(x.max_starts_per_minute) FILTER (WHERE x.type IS NOT NULL)
                                                   AS cap_starts
                                        FROM job_store_limits x
                                        WHERE coalesce(x.store_id, '') = c.store_key
                                          AND (x.type IS NULL
                                               OR num_nonnulls(x.max_running, x.max_starts_per_minute) > 0
                                                  AND (wanted IS NULL OR x.type = ANY (wanted)))) AS l
                                    WHERE c.store_key IN (SELECT unnest(flow_keys)) AND c.store_key <> ''
                                      AND (p.paused OR p.types IS NOT NULL OR h.types IS NOT NULL OR l.weight <> 1
                                           OR l.max_running IS NOT NULL OR l.max_starts IS NOT NULL
                                           OR l.cap_types IS NOT NULL)) AS f) AS x;
                    END IF;
                    busy_stores := busy_stores || busy_now;
                    caps_now := caps_now OR cardinality(ledger_cap_stores) > 0;
                ELSE
                    plan := '{}';
                END IF;

                candidates := '{}';
                chunk_empty := '{}';
                IF cardinality(plan) < cardinality(chunk) AND wanted IS NULL THEN
                    -- 3b. the heads of the stores read: a store with a due one is a candidate, with its exact rank;
                    -- the others are tightened in 6. (not the arrivals' stores), as are rows whose types are not
                    -- known. (v9: a claim of every type reads every store of these whole: one probe of jobs_fair_idx
                    -- each, of the index alone, without the other two ways of the statement below to rule out per
                    -- store; and only the stores flow control changes nothing for: the others are read further below)
                    SELECT coalesce(array_agg(ROW(c.store_key, c.types, c.via_types, c.store_wanted, c.turn_at,
                                                  greatest(h.head_run, c.turn_at), c.rank_pos, h.head_run, h.head_id,
                                                  '-infinity', 0, 0, 0, c.allowance, false, c.weight, c.cap_types,
                                                  c.cap_left)::jobs_fair_queue_v4)
                                    FILTER (WHERE h.head_run <= now()), '{}'),
                           coalesce(array_agg(c.store_key) FILTER (WHERE h.head_run IS NULL OR h.head_run > now()),
                                    '{}')
                    INTO candidates, chunk_empty
                    FROM (SELECT * FROM unnest(chunk) AS u
                          WHERE u.store_key NOT IN (SELECT f.store_key FROM unnest(plan) AS f)) AS c
                    LEFT JOIN LATERAL (
                        SELECT j.run_at AS head_run, j.id AS head_id
                        FROM jobs j
                        WHERE j.status = 'pending' AND j.priority = cur_level AND coalesce(j.store_id, '') = c.store_key
                          AND j.id <> ALL (skip_ids)
                        ORDER BY j.run_at, j.id
                        LIMIT 1
                    ) AS h ON true;
                ELSIF cardinality(plan) < cardinality(chunk) THEN
                    -- 3b. the heads of the stores read (of the types each may give): a store with a due one is a
                    -- candidate, with its exact rank; the others are tightened in 6. (not the arrivals' stores), as
                    -- are rows whose types are not known
                    -- (v9: of the stores flow control changes nothing for -- every store of the chunk, when nothing is
                    -- set for any; the others are read below, with what flow control makes of them)
                    SELECT coalesce(array_agg(ROW(c.store_key, c.types, c.via_types, c.store_wanted, c.turn_at,
                                                  greatest(h.head_run, c.turn_at), c.rank_pos, h.head_run, h.head_id,
                                                  '-infinity', 0, 0, 0, c.allowance, false, c.weight, c.cap_types,
                                                  c.cap_left)::jobs_fair_queue_v4)
                                    FILTER (WHERE h.head_run <= now()), '{}'),
                           coalesce(array_agg(c.store_key) FILTER (WHERE h.head_run IS NULL OR h.head_run > now()),
                                    '{}')
                    INTO candidates, chunk_empty
                    FROM (SELECT * FROM unnest(chunk) AS u
                          WHERE u.store_key NOT IN (SELECT f.store_key FROM unnest(plan) AS f)) AS c
                    LEFT JOIN LATERAL (
                        -- (v7: a store read whole when every type is wanted: one probe of jobs_fair_idx, of the index
                        -- alone -- jobs_fair_head()'s first branch, without the test of the type that reads the row)
                        (SELECT j.run_at AS head_run, j.id AS head_id
                         FROM jobs j
                         WHERE wanted IS NULL AND c.via_types IS NULL AND c.store_wanted IS NULL
                           AND j.status = 'pending' AND j.priority = cur_level
                               AND coalesce(j.store_id, '') = c.store_key
                           AND j.id <> ALL (skip_ids)
                         ORDER BY j.run_at, j.id
                         LIMIT 1)
                        UNION ALL
                        -- (and a store read by type when one type is wanted of it: one probe of jobs_fair_type_idx, if
                        -- the store may give that type -- jobs_fair_head()'s third branch, of one type)
                        (SELECT j.run_at, j.id
                         FROM jobs j
                         WHERE c.via_types IS NOT NULL AND cardinality(coalesce(c.store_wanted, wanted)) = 1
                           AND (coalesce(c.store_wanted, wanted))[1] = ANY (c.via_types)
                           AND j.status = 'pending' AND j.type = (coalesce(c.store_wanted, wanted))[1]
                           AND j.priority = cur_level AND coalesce(j.store_id, '') = c.store_key
                           AND j.id <> ALL (skip_ids)
                         ORDER BY j.run_at, j.id
                         LIMIT 1)
                        UNION ALL
                        SELECT g.head_run, g.head_id
                        FROM jobs_fair_head(cur_level, c.store_key, c.via_types, coalesce(c.store_wanted, wanted),
                                            skip_ids) AS g
                        WHERE NOT (wanted IS NULL AND c.via_types IS NULL AND c.store_wanted IS NULL)
                          AND NOT (c.via_types IS NOT NULL AND cardinality(coalesce(c.store_wanted, wanted)) = 1)
                    ) AS h ON true;
                END IF;
                IF cardinality(plan) > 0 THEN
                    -------------------------------------------------------------------------------------------------
                    -- 3a+ (counts) and 3b with flow control, one statement (v9; v8 had three: the counts, the
                    -- chunk rewritten, the heads). After the locks, so its snapshot sees every claim committed
                    -- before they were got, and none can commit a claim of these stores meanwhile:
                    --   counts   the stores this claim now serves alone: their live leases, only if a running limit
                    --            is set for them (as a whole or per type), and their claims of the last minute, only
                    --            if a starts limit is (v8 counted both for every store: jobs_flow_usage());
                    --   counted  what each store counted now may take in this claim (0: another claim serves it),
                    --   capped   ... and each of its types with a limit of its own;
                    --   stores   each store of the chunk in the plan, as flow control leaves it: left out (paused,
                    --            no allowance left, nothing it may give), held (its allowance is 0: read in the
                    --            types not paused for it, for its rank), or read by type when some of its wanted
                    --            types are left out or capped, with its allowance, weight and caps;
                    -- then the heads of those stores, as 3b above; a held store with a due one is kept with its rank.
                    -------------------------------------------------------------------------------------------------
                    WITH counts AS MATERIALIZED (
                        -- (two reads, each of every store it counts at once: `= ANY` of the stores, one descent of
                        -- the index per store, rather than a LATERAL per store; the lease test written so no index can
                        -- serve it: see jobs_flow_usage(), sql/027)
                        SELECT j.store_id AS store_key, j.type, count(*)::integer AS running, 0 AS started
                        FROM jobs j
                        WHERE j.store_id = ANY (ARRAY(SELECT f.store_key FROM unnest(plan) AS f
                                                      WHERE f.store_key = ANY (locked_now)
                                                        AND (f.max_running IS NOT NULL
                                                             OR num_nonnulls(VARIADIC f.cap_running) > 0)))
                          AND j.status = 'running' AND j.locked_until - now() > interval '0'
                        GROUP BY j.store_id, j.type
                        UNION ALL
                        SELECT w.store_key, w.type, 0, sum(w.jobs)::integer
                        FROM job_store_starts w
                        WHERE w.store_key = ANY (ARRAY(SELECT f.store_key FROM unnest(plan) AS f
                                                       WHERE f.store_key = ANY (locked_now)
                                                         AND (f.max_starts IS NOT NULL
                                                              OR num_nonnulls(VARIADIC f.cap_starts) > 0)))
                          AND w.claimed_at > now() - interval '1 minute'
                        GROUP BY w.store_key, w.type
                    ), counted AS MATERIALIZED (
                        SELECT f.store_key,
                               CASE WHEN f.store_key = ANY (busy_now) THEN 0
                                    ELSE least(f.max_running - coalesce(t.running, 0),
                                               f.max_starts - coalesce(t.started, 0))
                               END AS left_now,
                               f.store_key = ANY (locked_now)
                               AND (f.max_starts IS NOT NULL OR coalesce(num_nonnulls(VARIADIC f.cap_starts), 0) > 0)
                                   AS records_starts
                        FROM unnest(plan) AS f
                        LEFT JOIN (SELECT u.store_key, sum(u.running)::integer AS running,
                                          sum(u.started)::integer AS started
                                   FROM counts u
                                   GROUP BY u.store_key) AS t ON t.store_key = f.store_key
                        WHERE f.store_key = ANY (locked_now) OR f.store_key = ANY (busy_now)
                    ), capped AS MATERIALIZED (
                        SELECT f.store_key, t.type,
                               least(t.max_running - coalesce(u.running, 0),
                                     t.max_starts - coalesce(u.started, 0)) AS left_now
                        FROM unnest(plan) AS f
                        CROSS JOIN LATERAL unnest(f.cap_types, f.cap_running, f.cap_starts)
                            AS t(type, max_running, max_starts)
                        LEFT JOIN (SELECT u.store_key, u.type, sum(u.running)::integer AS running,
                                          sum(u.started)::integer AS started
                                   FROM counts u
                                   GROUP BY u.store_key, u.type) AS u ON u.store_key = f.store_key AND u.type = t.type
                        WHERE f.store_key = ANY (locked_now)
                    ), stores AS MATERIALIZED (  -- (materialized: its fields are computed once, not once per use below)
                        SELECT c.store_key, c.types,
                               CASE WHEN d.held THEN coalesce(k.may_types, c.via_types)
                                    WHEN b.by_type THEN k.store_wanted
                                    ELSE c.via_types END AS via_types,
                               CASE WHEN d.held THEN k.may_types ELSE k.store_wanted END AS store_wanted,
                               c.turn_at, c.rank_pos,
                               CASE WHEN d.held THEN 0 ELSE a.allowance END AS allowance,
                               CASE WHEN d.held THEN 1 ELSE coalesce(f.weight, 1) END AS weight,
                               CASE WHEN NOT d.held THEN x.cap_types END AS cap_types,
                               CASE WHEN NOT d.held THEN x.cap_left END AS cap_left,
                               d.held
                        FROM unnest(chunk) AS c
                        JOIN unnest(plan) AS f ON f.store_key = c.store_key
                        LEFT JOIN counted n ON n.store_key = c.store_key
                        CROSS JOIN LATERAL (
                            -- what it may still take: its allowance counted now or earlier in this claim, less what
                            -- this claim took from it
                            SELECT coalesce(n.left_now, ledger_left[array_position(ledger_stores, c.store_key)])
                                   - cardinality(array_positions(claimed_stores, c.store_key)) AS allowance
                        ) AS a
                        CROSS JOIN LATERAL (
                            SELECT array_agg(l.type) FILTER (WHERE l.left_now > 0) AS cap_types,
                                   array_agg(l.left_now) FILTER (WHERE l.left_now > 0) AS cap_left,
                                   coalesce(array_agg(l.type) FILTER (WHERE l.left_now <= 0), '{}') AS spent
                            FROM (SELECT l.type,
                                         l.left_then - (SELECT count(*)::integer
                                                        FROM unnest(claimed_stores, claimed_types) AS t(store_key, type)
                                                        WHERE t.store_key = c.store_key AND t.type = l.type) AS left_now
                                  FROM (SELECT * FROM unnest(ledger_cap_stores, ledger_cap_types, ledger_cap_left)
                                        UNION ALL
                                        SELECT * FROM capped) AS l(store_key, type, left_then)
                                  -- (caps_now: a per-type limit counted in this claim; else nothing to read, per row)
                                  WHERE caps_now AND l.store_key = c.store_key
                                    AND l.left_then IS NOT NULL) AS l
                        ) AS x
                        CROSS JOIN LATERAL (
                            SELECT coalesce(f.excluded, '{}') || x.spent AS excluded,
                                   cardinality(coalesce(f.excluded, '{}') || x.spent) > 0 OR x.cap_types IS NOT NULL
                                       AS by_type
                        ) AS b
                        CROSS JOIN LATERAL (
                            SELECT CASE WHEN b.by_type THEN
                                       ARRAY(SELECT t.type FROM unnest(coalesce(c.types, wanted)) AS t(type)
                                             WHERE (wanted IS NULL OR t.type = ANY (wanted))
                                               AND t.type <> ALL (b.excluded)
                                             ORDER BY t.type)
                                   END AS store_wanted,
                                   CASE WHEN cardinality(coalesce(f.excluded, '{}')) > 0 THEN
                                       ARRAY(SELECT t.type FROM unnest(coalesce(c.types, wanted)) AS t(type)
                                             WHERE (wanted IS NULL OR t.type = ANY (wanted))
                                               AND t.type <> ALL (f.excluded)
                                             ORDER BY t.type)
                                   END AS may_types
                            OFFSET 0
                        ) AS k
                        CROSS JOIN LATERAL (
                            SELECT CASE WHEN NOT f.paused AND coalesce(a.allowance, 1) > 0
                                                AND (NOT b.by_type OR cardinality(k.store_wanted) > 0) THEN false
                                        WHEN NOT f.paused AND a.allowance <= 0 AND c.store_key <> ALL (busy_stores)
                                             AND (k.may_types IS NULL OR cardinality(k.may_types) > 0) THEN true
                                   END AS held  -- (NULL: left out)
                        ) AS d
                        WHERE d.held IS NOT NULL
                    )
                    SELECT candidates
                           || coalesce(array_agg(ROW(c.store_key, c.types, c.via_types, c.store_wanted, c.turn_at,
                                                     greatest(h.head_run, c.turn_at), c.rank_pos, h.head_run,
                                                     h.head_id, '-infinity', 0, 0, 0, c.allowance, false, c.weight,
                                                     c.cap_types, c.cap_left)::jobs_fair_queue_v4)
                                       FILTER (WHERE NOT c.held AND h.head_run <= now()), '{}'),
                           chunk_empty
                           || coalesce(array_agg(c.store_key)
                                       FILTER (WHERE NOT c.held AND (h.head_run IS NULL OR h.head_run > now())), '{}'),
                           held_stores || coalesce(array_agg(c.store_key) FILTER (WHERE c.held AND h.head_run <= now()),
                                                   '{}'),
                           held_waits || coalesce(array_agg(greatest(h.head_run, c.turn_at))
                                                  FILTER (WHERE c.held AND h.head_run <= now()), '{}'),
                           held_poss || coalesce(array_agg(c.rank_pos) FILTER (WHERE c.held AND h.head_run <= now()),
                                                 '{}'),
                           held_heads || coalesce(array_agg(h.head_run) FILTER (WHERE c.held AND h.head_run <= now()),
                                                  '{}'),
                           ledger_stores || ARRAY(SELECT n.store_key FROM counted n),
                           ledger_left || ARRAY(SELECT n.left_now FROM counted n),
                           starts_stores || ARRAY(SELECT n.store_key FROM counted n WHERE n.records_starts),
                           ledger_cap_stores || ARRAY(SELECT p.store_key FROM capped p),
                           ledger_cap_types || ARRAY(SELECT p.type FROM capped p),
                           ledger_cap_left || ARRAY(SELECT p.left_now FROM capped p)
                    INTO candidates, chunk_empty, held_stores, held_waits, held_poss, held_heads, ledger_stores,
                         ledger_left, starts_stores, ledger_cap_stores, ledger_cap_types, ledger_cap_left
                    FROM stores AS c
                    LEFT JOIN LATERAL (
                        -- (v7: a store read whole when every type is wanted: one probe of jobs_fair_idx, of the index
                        -- alone -- jobs_fair_head()'s first branch, without the test of the type that reads the row)
                        (SELECT j.run_at AS head_run, j.id AS head_id
                         FROM jobs j
                         WHERE wanted IS NULL AND c.via_types IS NULL AND c.store_wanted IS NULL
                           AND j.status = 'pending' AND j.priority = cur_level
                               AND coalesce(j.store_id, '') = c.store_key
                           AND j.id <> ALL (skip_ids)
                         ORDER BY j.run_at, j.id
                         LIMIT 1)
                        UNION ALL
                        -- (and a store read by type when one type is wanted of it: one probe of jobs_fair_type_idx, if
                        -- the store may give that type -- jobs_fair_head()'s third branch, of one type)
                        (SELECT j.run_at, j.id
                         FROM jobs j
                         WHERE c.via_types IS NOT NULL AND cardinality(coalesce(c.store_wanted, wanted)) = 1
                           AND (coalesce(c.store_wanted, wanted))[1] = ANY (c.via_types)
                           AND j.status = 'pending' AND j.type = (coalesce(c.store_wanted, wanted))[1]
                           AND j.priority = cur_level AND coalesce(j.store_id, '') = c.store_key
                           AND j.id <> ALL (skip_ids)
                         ORDER BY j.run_at, j.id
                         LIMIT 1)
                        UNION ALL
                        SELECT g.head_run, g.head_id
                        FROM jobs_fair_head(cur_level, c.store_key, c.via_types, coalesce(c.store_wanted, wanted),
                                            skip_ids) AS g
                        WHERE NOT (wanted IS NULL AND c.via_types IS NULL AND c.store_wanted IS NULL)
                          AND NOT (c.via_types IS NOT NULL AND cardinality(coalesce(c.store_wanted, wanted)) = 1)
                    ) AS h ON true;
                END IF;
                pool := pool || candidates;
                IF NOT from_arrivals THEN
                    chunk_empty := chunk_empty || chunk_unknown;
                    tighten_stores := tighten_stores || chunk_empty;
                    tighten_levels := tighten_levels || array_fill(cur_level, ARRAY[cardinality(chunk_empty)]);
                END IF;

                -- 3c. place the candidates whose rank is below the bound of every row not read yet, in rank order,
                -- each with what it may take in this claim (p_max_per_store counts what it got at the levels above)
                -- (v8: the queues placed are appended in the same statement, not one by one in a loop)
                SELECT queues || coalesce(array_agg(ROW(c.store_key, c.types, c.via_types, c.store_wanted, c.turn_at,
                                                        c.rank_wait, c.rank_pos, c.head_run, c.head_id, c.after_run,
                                                        c.after_id, c.taken, c.owed, a.allowance, a.allowance > 0,
                                                        c.weight, c.cap_types, c.cap_left)::jobs_fair_queue_v4
                                                    ORDER BY c.rank_wait, c.rank_pos, c.head_run, c.store_key)
                                          FILTER (WHERE (c.rank_wait, c.rank_pos, c.head_run, c.store_key)
                                                        < (after_wait, after_pos, after_head, after_store)), '{}'),
                       coalesce(array_agg(c) FILTER (WHERE (c.rank_wait, c.rank_pos, c.head_run, c.store_key)
                                                           >= (after_wait, after_pos, after_head, after_store)), '{}')
                INTO queues, pool
                FROM unnest(pool) AS c
                CROSS JOIN LATERAL (SELECT least(p_limit, p_max_per_store - cardinality(array_positions(
                                                              claimed_stores, c.store_key)),
                                                 c.allowance) AS allowance) AS a;

            ELSIF step = 'whole rounds' THEN
                -----------------------------------------------------------------------------------------------------
                -- 4. WHOLE ROUNDS: every live queue is owed its weight times round_share more jobs (fewer under
                -- its allowance)
                -----------------------------------------------------------------------------------------------------
                round_share := slots_left / live_weight;
                -- (v8: one statement over the queues, not a loop that set each live one's owed and appended its ask)
                SELECT array_agg(ROW(q.store_key, q.types, q.via_types, q.store_wanted, q.turn_at, q.rank_wait,
                                     q.rank_pos, q.head_run, q.head_id, q.after_run, q.after_id, q.taken,
                                     CASE WHEN q.live THEN o.owed ELSE q.owed END, q.allowance, q.live, q.weight,
                                     q.cap_types, q.cap_left)::jobs_fair_queue_v4 ORDER BY q.r),
                       coalesce(array_agg(ROW(q.r, q.store_key, q.via_types, q.store_wanted, q.after_run, q.after_id,
                                              o.owed, NULL, q.cap_types, q.cap_left)::jobs_fair_ask_v4 ORDER BY q.r)
                                FILTER (WHERE q.live), '{}'),
                       coalesce(array_agg(q.r::integer ORDER BY q.r) FILTER (WHERE q.live), '{}')
                INTO queues, asks, step_ranks
                FROM unnest(queues) WITH ORDINALITY AS q(store_key, types, via_types, store_wanted, turn_at, rank_wait,
                                                         rank_pos, head_run, head_id, after_run, after_id, taken, owed,
                                                         allowance, live, weight, cap_types, cap_left, r)
                CROSS JOIN LATERAL (SELECT least(round_share * q.weight, q.allowance) AS owed) AS o;

            ELSIF step = 'partial round' THEN
                -----------------------------------------------------------------------------------------------------
                -- 5. PARTIAL ROUND: each queue its weight in jobs, in rank order, asked in batches while fewer jobs
                -- are asked than slots are left; a queue's first job at the level is its head, asked for by primary
                -- key (not for a queue with per-type caps: read from its cursor, by type)
                -----------------------------------------------------------------------------------------------------
                IF partial_at IS NULL THEN
                    partial_at := 1;
                    deferred_ranks := '{}'; deferred_ids := '{}'; deferred_runs := '{}'; deferred_types := '{}';
                END IF;
                asked := 0;
                WHILE partial_at <= cardinality(queues) AND asked < slots_left LOOP
                    r := partial_at;
                    partial_at := partial_at + 1;
                    CONTINUE WHEN NOT queues[r].live;
                    queues[r].owed := least(queues[r].weight, queues[r].allowance);
                    asked := asked + queues[r].owed;
                    asks := asks || ROW(r, queues[r].store_key, queues[r].via_types, queues[r].store_wanted,
                                        queues[r].after_run, queues[r].after_id, queues[r].owed,
                                        CASE WHEN queues[r].taken = 0 AND queues[r].cap_types IS NULL
                                             THEN queues[r].head_id END,
                                        queues[r].cap_types, queues[r].cap_left)::jobs_fair_ask_v4;
                    step_ranks := step_ranks || r;
                END LOOP;

            ELSE  -- 'deferred stores'
                -- 5. (end) the partial round asked every store of the level: the jobs set aside, in rank order, as
                -- long as slots are left (a job found but not taken is unlocked when the claim commits)
                got_ranks := deferred_ranks[1:slots_left];
                got_ids := deferred_ids[1:slots_left];
                got_runs := deferred_runs[1:slots_left];
                got_types := deferred_types[1:slots_left];
                step_ranks := got_ranks;
                partial_at := NULL;
            END IF;

            pk_ranks := '{}';
            IF cardinality(asks) > 0
               AND NOT EXISTS (SELECT 1 FROM unnest(asks) AS a WHERE a.head_id IS NULL OR a.take <> 1) THEN
                -- (v7: a partial round whose every ask is one job, its head -- stores of weight 1, each asked first
                -- at the level -- locks the heads by primary key in a statement of its own; only the asks whose head
                -- it did not get go on to the locked read below, which reads them from their cursor, as it did)
                SELECT coalesce(array_agg(h.rank ORDER BY h.rank), '{}'),
                       coalesce(array_agg(h.id ORDER BY h.rank), '{}'),
                       coalesce(array_agg(h.run_at ORDER BY h.rank), '{}'),
                       coalesce(array_agg(h.type ORDER BY h.rank), '{}')
                INTO pk_ranks, pk_ids, pk_runs, pk_types
                FROM (SELECT a.rank, j.id, j.run_at, j.type
                      FROM unnest(asks) AS a
                      JOIN jobs j ON j.id = a.head_id
                      WHERE j.status = 'pending' AND j.priority = cur_level AND coalesce(j.store_id, '') = a.store_key
                        AND j.run_at <= now() AND j.id <> ALL (skip_ids)
                        AND (coalesce(a.store_wanted, wanted) IS NULL
                             OR j.type = ANY (coalesce(a.store_wanted, wanted)))
                      FOR UPDATE OF j SKIP LOCKED) AS h;
                IF cardinality(pk_ranks) = cardinality(asks) THEN
                    asks := '{}';
                ELSE
                    asks := ARRAY(SELECT ROW(a.rank, a.store_key, a.via_types, a.store_wanted, a.after_run, a.after_id,
                                             a.take, NULL, a.cap_types, a.cap_left)::jobs_fair_ask_v4
                                  FROM unnest(asks) AS a
                                  WHERE a.rank <> ALL (pk_ranks));
                END IF;
                got_ranks := pk_ranks; got_ids := pk_ids; got_runs := pk_runs; got_types := pk_types;
            END IF;
            IF cardinality(asks) > 0 THEN
                -----------------------------------------------------------------------------------------------------
                -- 4./5. THE LOCKED READ of what the step asks: each ask's head by primary key when it names one (and
                -- it is still pending, due, of a type the store may give and not locked by another caller), then
                -- the rest of its `take` due jobs after its cursor (after the head, if got) in (run_at, id) order.
                -- Every read is FOR UPDATE SKIP LOCKED (sql/026 says why that is enough).
                -----------------------------------------------------------------------------------------------------
                WITH ask AS (
                    SELECT * FROM unnest(asks)
                ), heads AS (
                    SELECT a.rank, j.id, j.run_at, j.type
                    FROM ask a
                    JOIN jobs j ON j.id = a.head_id
                    WHERE j.status = 'pending' AND j.priority = cur_level AND coalesce(j.store_id, '') = a.store_key
                      AND j.run_at <= now() AND j.id <> ALL (skip_ids)
                      AND (coalesce(a.store_wanted, wanted) IS NULL OR j.type = ANY (coalesce(a.store_wanted, wanted)))
                    FOR UPDATE OF j SKIP LOCKED
                ), rest AS (
                    SELECT a.rank, a.store_key, a.via_types, a.store_wanted, a.cap_types, a.cap_left,
                           coalesce(h.run_at, a.after_run) AS after_run, coalesce(h.id, a.after_id) AS after_id,
                           a.take - CASE WHEN h.id IS NULL THEN 0 ELSE 1 END AS take
                    FROM ask a
                    LEFT JOIN heads h ON h.rank = a.rank
                    WHERE a.take > CASE WHEN h.id IS NULL THEN 0 ELSE 1 END
                ), got AS (
                    SELECT h.rank, h.id, h.run_at, h.type FROM heads h
                    UNION ALL
                    -- a store read through jobs_fair_idx (every type it holds is wanted, nothing left out)
                    SELECT a.rank, n.id, n.run_at, n.type
                    FROM rest a
                    CROSS JOIN LATERAL (SELECT j.id, j.run_at, j.type
                                        FROM jobs j
                                        WHERE a.via_types IS NULL AND j.status = 'pending' AND j.priority = cur_level
                                          AND coalesce(j.store_id, '') = a.store_key AND j.run_at <= now()
                                          AND (j.run_at, j.id) > (a.after_run, a.after_id)
                                          AND (wanted IS NULL OR j.type = ANY (wanted)) AND j.id <> ALL (skip_ids)
                                        ORDER BY j.run_at, j.id
                                        LIMIT a.take
                                        FOR UPDATE OF j SKIP LOCKED) AS n
                    UNION ALL
                    -- a store read by type: one read of jobs_fair_type_idx per type it may give, each at most its
                    -- cap, and of those jobs the first `take` in (run_at, id) order (the others read here stay
                    -- locked until the claim commits: another caller skips them meanwhile)
                    SELECT m.rank, m.id, m.run_at, m.type
                    FROM (SELECT a.rank, a.take, n.id, n.run_at, t.type,
                                 row_number() OVER (PARTITION BY a.rank ORDER BY n.run_at, n.id) AS nth
                          FROM rest a
                          CROSS JOIN LATERAL (SELECT u.type,
                                                     coalesce(a.cap_left[array_position(a.cap_types, u.type)],
                                                              a.take) AS cap
                                              FROM unnest(a.via_types) AS u(type)
                                              WHERE u.type = ANY (coalesce(a.store_wanted, wanted))) AS t
                          CROSS JOIN LATERAL (SELECT j.id, j.run_at
                                              FROM jobs j
                                              WHERE j.status = 'pending' AND j.type = t.type
                                                AND j.priority = cur_level AND coalesce(j.store_id, '') = a.store_key
                                                AND j.run_at <= now() AND (j.run_at, j.id) > (a.after_run, a.after_id)
                                                AND j.id <> ALL (skip_ids)
                                              ORDER BY j.run_at, j.id
                                              LIMIT least(a.take, t.cap)
                                              FOR UPDATE OF j SKIP LOCKED) AS n) AS m
                    WHERE m.nth <= m.take
                )
                SELECT coalesce(array_agg(g.rank ORDER BY g.rank, g.run_at, g.id), '{}'),
                       coalesce(array_agg(g.id ORDER BY g.rank, g.run_at, g.id), '{}'),
                       coalesce(array_agg(g.run_at ORDER BY g.rank, g.run_at, g.id), '{}'),
                       coalesce(array_agg(g.type ORDER BY g.rank, g.run_at, g.id), '{}')
                INTO got_ranks, got_ids, got_runs, got_types
                FROM got g;
                IF cardinality(pk_ranks) > 0 THEN
                    -- (v7: with the heads got above, in the same order)
                    SELECT array_agg(g.rank ORDER BY g.rank, g.run_at, g.id),
                           array_agg(g.id ORDER BY g.rank, g.run_at, g.id),
                           array_agg(g.run_at ORDER BY g.rank, g.run_at, g.id),
                           array_agg(g.type ORDER BY g.rank, g.run_at, g.id)
                    INTO got_ranks, got_ids, got_runs, got_types
                    FROM (SELECT * FROM unnest(got_ranks, got_ids, got_runs, got_types)
                          UNION ALL
                          SELECT * FROM unnest(pk_ranks, pk_ids, pk_runs, pk_types)) AS g(rank, id, run_at, type);
                END IF;
            END IF;

            IF step = 'partial round' AND cardinality(asks) > 0 THEN
                -- a queue whose first jobs here do not include its head: another caller holds the head, so it is
                -- serving that store right now; its jobs are set aside until every store nobody is serving has
                -- been asked (one statement splits what the step got, in the order got)
                -- (v9: not when every job the step got is a head got by primary key above -- asks is empty then:
                -- such a job is its queue's head, so none is set aside; v8 ran the statement for nothing)
                WITH got AS (
                    SELECT u.k, u.rank, u.id, u.run_at, u.type,
                           (queues[u.rank]).taken = 0
                           AND NOT coalesce(bool_or(u.id = (queues[u.rank]).head_id) OVER (PARTITION BY u.rank), false)
                               AS aside
                    FROM unnest(got_ranks, got_ids, got_runs, got_types) WITH ORDINALITY AS u(rank, id, run_at, type, k)
                )
                SELECT coalesce(array_agg(g.rank ORDER BY g.k) FILTER (WHERE g.aside), '{}'),
                       deferred_ids || coalesce(array_agg(g.id ORDER BY g.k) FILTER (WHERE g.aside), '{}'),
                       deferred_runs || coalesce(array_agg(g.run_at ORDER BY g.k) FILTER (WHERE g.aside), '{}'),
                       deferred_types || coalesce(array_agg(g.type ORDER BY g.k) FILTER (WHERE g.aside), '{}'),
                       coalesce(array_agg(g.rank ORDER BY g.k) FILTER (WHERE NOT g.aside), '{}'),
                       coalesce(array_agg(g.id ORDER BY g.k) FILTER (WHERE NOT g.aside), '{}'),
                       coalesce(array_agg(g.run_at ORDER BY g.k) FILTER (WHERE NOT g.aside), '{}'),
                       coalesce(array_agg(g.type ORDER BY g.k) FILTER (WHERE NOT g.aside), '{}')
                INTO aside_ranks, deferred_ids, deferred_runs, deferred_types, got_ranks, got_ids, got_runs, got_types
                FROM got g;
                deferred_ranks := deferred_ranks || aside_ranks;
                FOREACH r IN ARRAY aside_ranks LOOP
                    queues[r].owed := queues[r].owed - 1;  -- it has this job: it stays live if it got them all
                END LOOP;
            END IF;

            -- take what the step got, while slots are left: the one place a job becomes this claim's. The jobs, in
            -- the order got, with their place in their store's share of the level (nth) and their round; then
            -- each queue that got some moves on by what it got: counters, cursor (its last job), per-type caps
            taking := least(cardinality(got_ranks), slots_left);
            IF taking > 0 THEN
                -- (the arrays are built in the same row order, so they stay parallel; their order is free)
                SELECT claimed_ids || array_agg(g.id), claimed_stores || array_agg(g.store_key),
                       claimed_types || array_agg(g.type) FILTER (WHERE flow_stores),
                       claimed_rounds || array_agg(round_base + ((g.nth + g.weight - 1) / g.weight)::integer),
                       greatest(level_rounds, max(((g.nth + g.weight - 1) / g.weight)::integer)),
                       claimed_ranks || array_agg(g.rank), claimed_nths || array_agg(g.nth::integer)
                INTO claimed_ids, claimed_stores, claimed_types, claimed_rounds, level_rounds, claimed_ranks,
                     claimed_nths
                FROM (SELECT u.rank, u.id, u.type, (queues[u.rank]).store_key, (queues[u.rank]).weight,
                             (queues[u.rank]).taken + row_number() OVER (PARTITION BY u.rank ORDER BY u.k) AS nth
                      FROM unnest(got_ranks, got_ids, got_types) WITH ORDINALITY AS u(rank, id, type, k)
                      WHERE u.k <= taking) AS g;
                slots_left := slots_left - taking;
            END IF;
            -- ... and a queue the step asked stays live if it gave all it was asked for (a job set aside counts) and
            -- may take more; one that gave less has no lockable due job left it may give
            -- (v8: one loop over the queues asked, each written back once; v7 had a second loop for liveness)
            FOR r, took, took_last IN
                SELECT u.rank, count(u.k)::integer, max(u.k)::integer
                FROM (SELECT g.rank, g.k FROM unnest(got_ranks) WITH ORDINALITY AS g(rank, k) WHERE g.k <= taking
                      UNION ALL
                      SELECT s.rank, NULL FROM unnest(step_ranks) AS s(rank)) AS u
                GROUP BY u.rank
            LOOP
                one := queues[r];
                IF took = 0 THEN
                    queues[r].live := one.owed = 0 AND one.allowance > 0;
                ELSIF one.cap_types IS NULL THEN
                    queues[r] := ROW(one.store_key, one.types, one.via_types, one.store_wanted, one.turn_at,
                                     one.rank_wait, one.rank_pos, one.head_run, one.head_id, got_runs[took_last],
                                     got_ids[took_last], one.taken + took, greatest(one.owed - took, 0),
                                     one.allowance - took, one.owed <= took AND one.allowance > took, one.weight,
                                     NULL, one.cap_left)::jobs_fair_queue_v4;
                ELSE
                    one.taken := one.taken + took;
                    one.owed := greatest(one.owed - took, 0);
                    one.allowance := one.allowance - took;
                    one.after_run := got_runs[took_last];
                    one.after_id := got_ids[took_last];
                    one.cap_left := ARRAY(SELECT one.cap_left[i]
                                                 - (SELECT count(*)::integer
                                                    FROM unnest(got_ranks[1:taking], got_types[1:taking])
                                                         AS t(rank, type)
                                                    WHERE t.rank = r AND t.type = one.cap_types[i])
                                          FROM generate_subscripts(one.cap_types, 1) AS i
                                          ORDER BY i);
                    one.live := one.owed = 0 AND one.allowance > 0;
                    queues[r] := one;
                END IF;
            END LOOP;
            SELECT count(*)::integer, coalesce(sum(q.weight), 0)::integer
            INTO live_queues, live_weight
            FROM unnest(queues) AS q WHERE q.live;
        END LOOP steps;
        round_base := round_base + level_rounds;

        -- END OF THE LEVEL: the held stores ranking before the last store served here are passed over (6.)
        IF cardinality(held_stores) > 0 THEN
            FOR r IN REVERSE cardinality(queues) .. 1 LOOP
                CONTINUE WHEN queues[r].taken = 0;
                passed_stores := passed_stores || ARRAY(
                    SELECT h.store_key
                    FROM unnest(held_stores, held_waits, held_poss, held_heads) AS h(store_key, wait, pos, head)
                    WHERE (h.wait, h.pos, h.head, h.store_key)
                          < (queues[r].rank_wait, queues[r].rank_pos, queues[r].head_run, queues[r].store_key));
                EXIT;
            END LOOP;
        END IF;
    END LOOP levels;

    -------------------------------------------------------------------------------------------------------------------
    -- 6. TURNS: rows found with nothing due (of the wanted types) are made exact, except the ones this claim widened;
    -- the claims of stores with a starts limit are recorded; the stores served get their turn, and the stores passed
    -- over theirs, before the first job (served_pos 0)
    -------------------------------------------------------------------------------------------------------------------
    IF cardinality(tighten_stores) > 0 THEN
        PERFORM job_store_queues_tighten(array_agg(t.priority), array_agg(t.store_key))
        FROM unnest(tighten_levels, tighten_stores) AS t(priority, store_key)
        WHERE NOT EXISTS (SELECT 1 FROM unnest(widened_levels, widened_stores) AS w(priority, store_key)
                          WHERE w.priority = t.priority AND w.store_key = t.store_key)
        HAVING count(*) > 0;
    END IF;

    IF cardinality(starts_stores) > 0 AND claimed_stores && starts_stores THEN
        -- (one statement: the old rows' DELETE as a CTE)
        -- (v9: only the stores with a starts limit that this claim took jobs of: their records, and their rows past
        -- the minute deleted -- a store counted that gave nothing keeps its old rows until a claim takes one of its
        -- jobs; past the minute they count for nothing. v8 deleted the old rows of every store it counted.)
        WITH took AS MATERIALIZED (
            SELECT c.store_key, c.type, count(*)::integer AS jobs
            FROM unnest(claimed_stores, claimed_types) AS c(store_key, type)
            WHERE c.store_key = ANY (starts_stores)
            GROUP BY c.store_key, c.type
        ), old AS (
            -- (v9: deleted in place, not locked first by a SELECT ... FOR UPDATE SKIP LOCKED and then deleted by
            -- primary key, which wrote each row twice: this claim holds the stores' lock 20225, so no other claim
            -- writes their rows; the API's prune of rows past the minute (jobprocessor/flow/limits.py, when a limit
            -- is removed) skips the rows it finds locked, and this DELETE waits at most for its transaction, which
            -- waits for nothing)
            DELETE FROM job_store_starts s
            WHERE s.store_key = ANY (ARRAY(SELECT DISTINCT t.store_key FROM took t))
              AND s.claimed_at <= now() - interval '1 minute'
        )
        INSERT INTO job_store_starts (store_key, type, claimed_at, jobs)
        SELECT t.store_key, t.type, now(), t.jobs
        FROM took t;
    END IF;

    IF cardinality(claimed_ids) = 0 THEN
        RETURN;
    END IF;
    -- (v8: each job's place in the claim order is computed once, by one sorted pass, for both the turns and the
    -- result; v7 sorted the claimed jobs twice, once for job_store_queues_serve()'s positions, once for the result)
    WITH ordered AS MATERIALIZED (
        SELECT u.id, u.store_key, row_number() OVER (ORDER BY u.round, u.rank, u.nth) AS pos
        FROM unnest(claimed_ids, claimed_stores, claimed_rounds, claimed_ranks, claimed_nths)
             AS u(id, store_key, round, rank, nth)
    )
    SELECT (SELECT array_agg(p.id ORDER BY p.pos) FROM ordered p),
           array_agg(t.store_key ORDER BY t.store_key), array_agg(t.pos ORDER BY t.store_key)
    INTO claimed_ids, turn_stores, turn_poss
    FROM (SELECT c.store_key, max(c.pos)::integer AS pos
          FROM (SELECT p.store_key, p.pos FROM ordered p
                UNION ALL
                SELECT p.store_key, 0 FROM unnest(passed_stores) AS p(store_key)) AS c
          GROUP BY c.store_key) AS t;
    -- the turns (job_store_queues_serve(): it joins the stores to the directory's rows by a sort, so a claim from
    -- 1,000 stores does not look each one up in the array -- inlined here with `= ANY` and array_position(), such
    -- a claim took 9 ms more), then the result in the order computed above
    PERFORM job_store_queues_serve(turn_stores, turn_poss);
    RETURN QUERY
        SELECT u.id, u.pos::integer FROM unnest(claimed_ids) WITH ORDINALITY AS u(id, pos);
END
$$;

--
-- Name: jobs_fair_claim(integer, text, integer, bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_fair_claim(p_limit integer, p_type text, p_max_per_store integer, p_skip bigint[]) RETURNS TABLE(job_id bigint, claim_order integer)
    LANGUAGE sql
    AS $$
        SELECT f.job_id, f.claim_order
        FROM jobs_fair_claim(p_limit, CASE WHEN p_type IS NOT NULL THEN ARRAY[p_type] END, p_max_per_store,
                             p_skip) AS f
    $$;

--
-- Name: jobs_fair_claim_one_store(integer, text[], integer, bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_fair_claim_one_store(p_limit integer, p_wanted text[], p_max_per_store integer, p_skip bigint[]) RETURNS TABLE(job_id bigint, claim_order integer)
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
DECLARE
    store        text;     -- the one store the directory knows (NULL: none, or more than one)
    store_types  text[];   -- its types, every row's (NULL: a row does not know them)
    one_type     text;     -- the one wanted type of the store, when it has others (read by type)
    ids          bigint[]; -- the jobs taken, in the claim order
BEGIN
    -- (min and max of the primary key's first column: two index probes, however many stores there are)
    SELECT min(q.store_key) INTO store FROM job_store_queues q HAVING min(q.store_key) = max(q.store_key);
    IF store IS NULL
       OR EXISTS (SELECT 1 FROM job_store_arrivals)
       OR EXISTS (SELECT 1 FROM job_pauses)
       OR EXISTS (SELECT 1 FROM job_store_limits)
       OR EXISTS (SELECT 1 FROM job_store_quota_holds h WHERE h.until > now()) THEN
        RETURN;
    END IF;
    IF p_wanted IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM job_store_queues q WHERE q.store_key = store AND q.types IS NULL) THEN
            RETURN;
        END IF;
        store_types := ARRAY(SELECT DISTINCT t.type
                             FROM job_store_queues q CROSS JOIN LATERAL unnest(q.types) AS t(type)
                             WHERE q.store_key = store);
        IF NOT store_types <@ p_wanted THEN
            -- the store has types not wanted: read by type if one of its types only is wanted, else the whole way
            store_types := ARRAY(SELECT t.type FROM unnest(store_types) AS t(type) WHERE t.type = ANY (p_wanted));
            IF cardinality(store_types) <> 1 THEN
                RETURN;
            END IF;
            one_type := store_types[1];
        END IF;
    END IF;
    IF one_type IS NULL THEN
        -- (the type test still holds back a job of another type enqueued since the directory was read)
        ids := ARRAY(SELECT j.id FROM jobs j
                     WHERE j.status = 'pending' AND coalesce(j.store_id, '') = store AND j.run_at <= now()
                       AND (p_wanted IS NULL OR j.type = ANY (p_wanted)) AND j.id <> ALL (p_skip)
                     ORDER BY j.priority, j.run_at, j.id
                     LIMIT least(p_limit, coalesce(p_max_per_store, p_limit))
                     FOR UPDATE OF j SKIP LOCKED);
    ELSE  -- (jobs_fair_type_idx, the type and the store fixed)
        ids := ARRAY(SELECT j.id FROM jobs j
                     WHERE j.status = 'pending' AND j.type = one_type AND coalesce(j.store_id, '') = store
                       AND j.run_at <= now() AND j.id <> ALL (p_skip)
                     ORDER BY j.priority, j.run_at, j.id
                     LIMIT least(p_limit, coalesce(p_max_per_store, p_limit))
                     FOR UPDATE OF j SKIP LOCKED);
    END IF;
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    PERFORM job_store_queues_serve(ARRAY[store], ARRAY[cardinality(ids)]);
    RETURN QUERY SELECT u.id, u.pos::integer FROM unnest(ids) WITH ORDINALITY AS u(id, pos);
END
$$;

--
-- Name: jobs_fair_flow_plan(public.jobs_fair_queue_v4[], text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_fair_flow_plan(p_chunk public.jobs_fair_queue_v4[], p_wanted text[]) RETURNS SETOF public.jobs_fair_flow
    LANGUAGE sql STABLE
    AS $$
    SELECT c.store_key, c.ordinality::integer, coalesce(p.paused, false),
           coalesce(p.types, '{}') || coalesce(h.types, '{}'),
           l.weight, l.max_running, l.max_starts, l.cap_types, l.cap_running, l.cap_starts
    FROM unnest(p_chunk) WITH ORDINALITY AS c
    CROSS JOIN LATERAL (SELECT bool_or(x.type IS NULL) AS paused,
                               array_agg(x.type) FILTER (WHERE x.type IS NOT NULL) AS types
                        FROM job_pauses x
                        WHERE coalesce(x.store_id, '') = c.store_key) AS p
    CROSS JOIN LATERAL (SELECT array_agg(x.type) AS types
                        FROM job_store_quota_holds x
                        WHERE x.store_key = c.store_key AND x.until > now()) AS h
    CROSS JOIN LATERAL (SELECT count(*) AS n,
                               max(x.weight) FILTER (WHERE x.type IS NULL) AS weight,
                               max(x.max_running) FILTER (WHERE x.type IS NULL) AS max_running,
                               max(x.max_starts_per_minute) FILTER (WHERE x.type IS NULL) AS max_starts,
                               array_agg(x.type) FILTER (WHERE x.type IS NOT NULL) AS cap_types,
                               array_agg(x.max_running) FILTER (WHERE x.type IS NOT NULL) AS cap_running,
                               array_agg(x.max_starts_per_minute) FILTER (WHERE x.type IS NOT NULL) AS cap_starts
                        FROM jobs_flow_limits(ARRAY[c.store_key]) AS x
                        WHERE x.type IS NULL OR p_wanted IS NULL OR x.type = ANY (p_wanted)) AS l
    WHERE c.store_key <> ''
      AND (p.paused OR p.types IS NOT NULL OR h.types IS NOT NULL OR l.n > 0)
$$;

--
-- Name: jobs_fair_head(smallint, text, text[], text[], bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_fair_head(p_level smallint, p_store text, p_via text[], p_wanted text[], p_skip bigint[]) RETURNS TABLE(head_run timestamp with time zone, head_id bigint)
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(every_type.run_at, walked.run_at, by_type.run_at),
           coalesce(every_type.id, walked.id, by_type.id)
    FROM (VALUES (1)) AS one(x)
    LEFT JOIN LATERAL (SELECT j.run_at, j.id
                       FROM jobs j
                       WHERE p_via IS NULL AND j.status = 'pending' AND j.priority = p_level
                         AND coalesce(j.store_id, '') = p_store AND (p_wanted IS NULL OR j.type = ANY (p_wanted))
                         AND j.id <> ALL (p_skip)
                       ORDER BY j.run_at, j.id
                       LIMIT 1) AS every_type ON true
    LEFT JOIN LATERAL (SELECT n.run_at, n.id
                       FROM (SELECT j.run_at, j.id, j.type
                             FROM jobs j
                             WHERE p_via IS NOT NULL AND cardinality(p_wanted) > 1 AND j.status = 'pending'
                               AND j.priority = p_level AND coalesce(j.store_id, '') = p_store
                               AND j.id <> ALL (p_skip)
                             ORDER BY j.run_at, j.id
                             LIMIT 8) AS n
                       WHERE n.type = ANY (p_wanted)
                       ORDER BY n.run_at, n.id
                       LIMIT 1) AS walked ON true
    LEFT JOIN LATERAL (SELECT x.run_at, x.id
                       FROM unnest(p_via) AS t(type)
                       CROSS JOIN LATERAL (SELECT j.run_at, j.id
                                           FROM jobs j
                                           WHERE j.status = 'pending' AND j.type = t.type AND j.priority = p_level
                                             AND coalesce(j.store_id, '') = p_store AND j.id <> ALL (p_skip)
                                           ORDER BY j.run_at, j.id
                                           LIMIT 1) AS x
                       WHERE walked.id IS NULL AND t.type = ANY (p_wanted)
                       ORDER BY x.run_at, x.id
                       LIMIT 1) AS by_type ON true
    WHERE every_type.id IS NOT NULL OR walked.id IS NOT NULL OR by_type.id IS NOT NULL
$$;

--
-- Name: jobs_flow_limits(text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_flow_limits(p_stores text[]) RETURNS TABLE(store_key text, type text, max_running integer, max_starts_per_minute integer, weight integer, openai_tokens_per_minute integer)
    LANGUAGE sql STABLE
    AS $$
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
$$;

--
-- Name: jobs_flow_usage(text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_flow_usage(p_stores text[]) RETURNS TABLE(store_key text, type text, running integer, started integer)
    LANGUAGE sql STABLE
    AS $$
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
$$;

--
-- Name: jobs_note_inserted_pending(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_note_inserted_pending() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    not_held bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- a REPEATABLE READ or SERIALIZABLE transaction would fail ("could not serialize access") on locking a
        -- row a claim has changed since its snapshot, SKIP LOCKED or not: arrivals, plain inserts, cannot fail so
        INSERT INTO job_store_arrivals (store_key, priority, type, run_at)
        SELECT coalesce(i.store_id, ''), i.priority, i.type, min(i.run_at)
        FROM inserted_jobs i
        WHERE i.status = 'pending'
        GROUP BY coalesce(i.store_id, ''), i.priority, i.type;
        RETURN NULL;
    END IF;
    WITH per_type AS (
        SELECT i.priority, coalesce(i.store_id, '') AS store_key, i.type, min(i.run_at) AS run_at
        FROM inserted_jobs i
        WHERE i.status = 'pending'
        GROUP BY i.priority, coalesce(i.store_id, ''), i.type
    ), pairs AS (
        SELECT t.priority, t.store_key, min(t.run_at) AS run_at, array_agg(t.type ORDER BY t.type) AS types,
               array_agg(t.run_at ORDER BY t.type) AS type_heads
        FROM per_type t
        GROUP BY t.priority, t.store_key
    ), held AS (
        -- (the condition is in this statement, so a row a claim tightened and committed meanwhile is checked
        -- again in its new version before it is locked)
        SELECT d.store_key
        FROM job_store_queues d
        JOIN pairs p ON d.store_key = p.store_key AND d.priority = p.priority
        WHERE d.head_lb <= p.run_at
          AND (d.types IS NULL
               OR NOT EXISTS (SELECT 1 FROM unnest(p.types, p.type_heads) AS j(type, run_at)
                              WHERE NOT job_store_queues_covers(d.head_lb, d.types, d.type_heads, j.type,
                                                                j.run_at)))
        ORDER BY d.store_key, d.priority
        FOR KEY SHARE OF d SKIP LOCKED
    )
    SELECT (SELECT count(*) FROM pairs) - (SELECT count(*) FROM held) INTO not_held;
    IF not_held > 0 THEN
        PERFORM job_store_queues_cover(array_agg(n.priority), array_agg(n.store_key), array_agg(n.type),
                                       array_agg(n.run_at))
        FROM (SELECT i.priority, coalesce(i.store_id, '') AS store_key, i.type, min(i.run_at) AS run_at
              FROM inserted_jobs i
              WHERE i.status = 'pending'
              GROUP BY i.priority, coalesce(i.store_id, ''), i.type) AS n;
    END IF;
    RETURN NULL;
END
$$;

--
-- Name: jobs_note_updated_pending(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_note_updated_pending() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN  -- as in jobs_note_inserted_pending()
        INSERT INTO job_store_arrivals (store_key, priority, type, run_at)
        VALUES (coalesce(NEW.store_id, ''), NEW.priority, NEW.type, NEW.run_at);
        RETURN NULL;
    END IF;
    PERFORM 1
    FROM job_store_queues d
    WHERE d.store_key = coalesce(NEW.store_id, '') AND d.priority = NEW.priority
      AND job_store_queues_covers(d.head_lb, d.types, d.type_heads, NEW.type, NEW.run_at)
    FOR KEY SHARE SKIP LOCKED;
    IF NOT FOUND THEN
        PERFORM job_store_queues_cover(ARRAY[NEW.priority], ARRAY[coalesce(NEW.store_id, '')], ARRAY[NEW.type],
                                       ARRAY[NEW.run_at]);
    END IF;
    RETURN NULL;
END
$$;

--
-- Name: jobs_pending_types(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_pending_types() RETURNS text[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    WITH RECURSIVE seen(type) AS (
        SELECT (SELECT min(j.type) FROM jobs j WHERE j.status = 'pending')
        UNION ALL
        SELECT (SELECT min(j.type) FROM jobs j WHERE j.status = 'pending' AND j.type > s.type)
        FROM seen s
        WHERE s.type IS NOT NULL
    )
    SELECT coalesce(array_agg(s.type ORDER BY s.type), '{}') FROM seen s WHERE s.type IS NOT NULL
$$;

--
-- Name: jobs_wait_reasons(bigint, text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_wait_reasons(p_job_id bigint, p_handler_types text[] DEFAULT NULL::text[]) RETURNS TABLE(code text, message text, until timestamp with time zone, details jsonb)
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    j             jobs%ROWTYPE;
    key           text;          -- its store ('' for a job without one)
    blocked       boolean := false;  -- something other than the competition for slots keeps it waiting
    held_until    timestamptz;
    pause         record;
    lim           record;
    running_now   integer;
    started_now   integer;
    frees_at      timestamptz;
    turn_at       timestamptz;
    turn_pos      integer;
    head_run      timestamptz;
    rank_wait     timestamptz;
    ahead_jobs    integer;
    ahead_stores  integer;
    per_round     integer;
BEGIN
    SELECT * INTO j FROM jobs WHERE id = p_job_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    key := coalesce(j.store_id, '');
    IF j.status = 'running' THEN
        code := 'leased';
        until := j.locked_until;
        IF j.started_at IS NULL THEN
            message := format('claimed by %s and not started yet (its call starts it on a free thread, or gives it '
                              'back); the lease runs until %s', j.locked_by, j.locked_until);
        ELSE
            message := format('running in %s since %s; its lease runs until %s and is renewed while the handler '
                              'runs', j.locked_by, j.started_at, j.locked_until);
        END IF;
        details := jsonb_build_object('locked_by', j.locked_by, 'started_at', j.started_at);
        RETURN NEXT;
        RETURN;
    END IF;
    IF j.status = 'waiting' THEN  -- a workflow child (sql/013): not pending until its parents have ended
        code := 'parents'; until := NULL;
        SELECT jsonb_build_object('waits_for', j.waits_for,
                                  'parent_ids', coalesce(jsonb_agg(d.parent_id ORDER BY d.parent_id), '[]'::jsonb))
        INTO details
        FROM (SELECT parent_id FROM job_dependencies
              WHERE child_id = j.id AND NOT resolved ORDER BY parent_id LIMIT 20) d;
        message := format('waits for %s parent job(s) to end (it becomes pending when the last one completes): %s',
                          j.waits_for, details -> 'parent_ids');
        RETURN NEXT;
        RETURN;
    END IF;
    IF j.status <> 'pending' THEN
        RETURN;
    END IF;

    IF p_handler_types IS NOT NULL AND NOT (j.type = ANY (p_handler_types)) THEN
        blocked := true;
        code := 'no_handler'; until := NULL;
        message := format('no handler is registered for type %s here: no call claims it until a deploy brings one '
                          'back (or cancel it)', j.type);
        details := jsonb_build_object('type', j.type);
        RETURN NEXT;
    END IF;

    FOR pause IN SELECT p.id, p.type, p.store_id, p.created_at
                 FROM job_pauses p
                 WHERE (coalesce(p.store_id, '') = '' AND p.type = j.type)
                    OR (key <> '' AND coalesce(p.store_id, '') = key AND (p.type IS NULL OR p.type = j.type))
                 ORDER BY p.id LOOP
        blocked := true;
        code := 'paused'; until := NULL;
        message := format('paused since %s: %s (pause %s; DELETE /pauses/%s resumes)', pause.created_at,
                          CASE WHEN pause.store_id IS NULL THEN format('type %s', pause.type)
                               WHEN pause.type IS NULL THEN format('store %s', pause.store_id)
                               ELSE format('type %s of store %s', pause.type, pause.store_id) END,
                          pause.id, pause.id);
        details := jsonb_build_object('pause_id', pause.id, 'type', pause.type, 'store_id', pause.store_id);
        RETURN NEXT;
    END LOOP;

    SELECT w.until INTO held_until FROM rate_limiter_waits w WHERE w.job_id = j.id AND w.until > now();
    IF held_until IS NOT NULL THEN
        blocked := true;
        code := 'limiter_hold'; until := held_until;
        message := format('the shared OpenAI rate limiter has rescheduled it until %s (the budget for its call '
                          'refills then)', held_until);
        details := jsonb_build_object('limiter', (SELECT w.name FROM rate_limiter_waits w WHERE w.job_id = j.id));
        RETURN NEXT;
    END IF;
    held_until := NULL;
    SELECT h.until INTO held_until
    FROM job_store_quota_holds h WHERE h.store_key = key AND h.type = j.type AND h.until > now();
    IF held_until IS NOT NULL THEN
        blocked := true;
        code := 'token_quota'; until := held_until;
        message := format('store %s has spent its OpenAI token quota (openai_tokens_per_minute); its %s jobs are '
                          'not claimed until %s', key, j.type, held_until);
        details := jsonb_build_object('store_id', j.store_id, 'type', j.type);
        RETURN NEXT;
    END IF;
    IF j.run_at > now() AND NOT blocked THEN
        blocked := true;
        until := j.run_at;
        IF j.attempts > 0 OR j.deferrals > 0 THEN
            code := 'backoff';
            message := format('it runs again at %s (attempt %s of %s so far, put off %s times)%s', j.run_at,
                              j.attempts, j.max_attempts, j.deferrals,
                              CASE WHEN j.last_error IS NOT NULL THEN format('; last error: %s', left(j.last_error, 200))
                                   ELSE '' END);
        ELSE
            code := 'not_due';
            message := format('not due before %s (its run_at)', j.run_at);
        END IF;
        details := jsonb_build_object('run_at', j.run_at, 'attempts', j.attempts, 'deferrals', j.deferrals);
        RETURN NEXT;
    ELSIF j.run_at > now() THEN
        blocked := true;
    END IF;

    -- its store's limits, as a whole and for its type, against live leases and the last minute's claims
    FOR lim IN SELECT l.type, l.max_running, l.max_starts_per_minute
               FROM jobs_flow_limits(ARRAY[key]) AS l
               WHERE (l.type IS NULL OR l.type = j.type)
                 AND (l.max_running IS NOT NULL OR l.max_starts_per_minute IS NOT NULL)
               ORDER BY l.type NULLS FIRST LOOP
        SELECT coalesce(sum(u.running), 0)::integer, coalesce(sum(u.started), 0)::integer
        INTO running_now, started_now
        FROM jobs_flow_usage(ARRAY[key]) AS u
        WHERE lim.type IS NULL OR u.type = lim.type;
        IF lim.max_running IS NOT NULL AND running_now >= lim.max_running THEN
            blocked := true;
            code := 'store_running_limit'; until := NULL;
            message := format('store %s has %s %sjobs running (live leases), its max_running is %s: the next slot '
                              'frees when one of them ends', key, running_now,
                              CASE WHEN lim.type IS NULL THEN '' ELSE lim.type || ' ' END, lim.max_running);
            details := jsonb_build_object('running', running_now, 'max_running', lim.max_running, 'type', lim.type);
            RETURN NEXT;
        END IF;
        IF lim.max_starts_per_minute IS NOT NULL AND started_now >= lim.max_starts_per_minute THEN
            blocked := true;
            SELECT s.claimed_at + interval '1 minute' INTO frees_at
            FROM (SELECT w.claimed_at,
                         sum(w.jobs) OVER (ORDER BY w.claimed_at DESC, w.id DESC) AS newest_jobs
                  FROM job_store_starts w
                  WHERE w.store_key = key AND (lim.type IS NULL OR w.type = lim.type)
                    AND w.claimed_at > now() - interval '1 minute') AS s
            WHERE s.newest_jobs >= greatest(lim.max_starts_per_minute, 1)
            ORDER BY s.claimed_at DESC
            LIMIT 1;
            code := 'store_rate_limit'; until := frees_at;
            message := format('store %s was given %s %sjobs in the last minute, its max_starts_per_minute is %s%s',
                              key, started_now, CASE WHEN lim.type IS NULL THEN '' ELSE lim.type || ' ' END,
                              lim.max_starts_per_minute,
                              CASE WHEN frees_at IS NOT NULL THEN format(': the next slot frees at %s', frees_at)
                                   ELSE '' END);
            details := jsonb_build_object('started', started_now, 'max_starts_per_minute', lim.max_starts_per_minute,
                                          'type', lim.type);
            RETURN NEXT;
        END IF;
    END LOOP;

    IF blocked THEN
        RETURN;
    END IF;

    -- the competition for slots: more urgent due jobs (priority is global), then the stores ahead at its level
    SELECT count(*)::integer INTO ahead_jobs
    FROM (SELECT 1 FROM jobs x
          WHERE x.status = 'pending' AND x.priority < j.priority AND x.run_at <= now()
          LIMIT 10000) AS x;
    IF ahead_jobs > 0 THEN
        code := 'behind_higher_priority'; until := NULL;
        message := format('%s%s due jobs of a more urgent priority than %s come first (priority is global)',
                          ahead_jobs, CASE WHEN ahead_jobs = 10000 THEN '+' ELSE '' END, j.priority);
        details := jsonb_build_object('jobs_ahead', ahead_jobs);
        RETURN NEXT;
    END IF;

    SELECT q.served_at, q.served_pos INTO turn_at, turn_pos
    FROM job_store_queues q WHERE q.store_key = key AND q.priority = j.priority;
    turn_pos := coalesce(turn_pos, 0);
    SELECT x.run_at INTO head_run
    FROM jobs x
    WHERE x.status = 'pending' AND x.priority = j.priority AND coalesce(x.store_id, '') = key AND x.run_at <= now()
    ORDER BY x.run_at, x.id
    LIMIT 1;
    head_run := coalesce(head_run, j.run_at);
    rank_wait := greatest(head_run, turn_at);
    SELECT count(*)::integer INTO ahead_stores
    FROM (SELECT q.store_key, q.served_at, q.served_pos
          FROM job_store_queues q
          WHERE q.priority = j.priority AND q.store_key <> key
            AND (q.wait_from, q.served_pos, q.head_lb, q.store_key) < (rank_wait, turn_pos, head_run, key)
          ORDER BY q.wait_from, q.served_pos, q.head_lb, q.store_key
          LIMIT 1000) AS q
    CROSS JOIN LATERAL (SELECT x.run_at
                        FROM jobs x
                        WHERE x.status = 'pending' AND x.priority = j.priority
                          AND coalesce(x.store_id, '') = q.store_key AND x.run_at <= now()
                        ORDER BY x.run_at, x.id
                        LIMIT 1) AS h
    WHERE (greatest(h.run_at, q.served_at), q.served_pos, h.run_at, q.store_key) < (rank_wait, turn_pos, head_run, key);
    SELECT count(*)::integer INTO ahead_jobs
    FROM (SELECT 1 FROM jobs x
          WHERE x.status = 'pending' AND x.priority = j.priority AND coalesce(x.store_id, '') = key
            AND x.run_at <= now() AND (x.run_at, x.id) < (j.run_at, j.id)
          LIMIT 10000) AS x;
    SELECT l.weight INTO per_round FROM jobs_flow_limits(ARRAY[key]) AS l WHERE l.type IS NULL;
    per_round := coalesce(per_round, 1);
    code := 'waiting_for_turn'; until := NULL;
    IF ahead_stores = 0 AND ahead_jobs = 0 THEN
        message := format('first in line at priority %s: the next claim takes it', j.priority);
    ELSE
        message := format('%s%s stores wait ahead of %s at priority %s (the longest waiting go first) and %s%s of '
                          'its own due jobs come before this one; each round of a claim gives a store %s job%s',
                          ahead_stores, CASE WHEN ahead_stores = 1000 THEN '+' ELSE '' END,
                          CASE WHEN key = '' THEN 'the jobs without a store' ELSE 'store ' || key END, j.priority,
                          ahead_jobs, CASE WHEN ahead_jobs = 10000 THEN '+' ELSE '' END, per_round,
                          CASE WHEN per_round = 1 THEN '' ELSE 's' END);
    END IF;
    details := jsonb_build_object('stores_ahead', ahead_stores, 'jobs_ahead_in_store', ahead_jobs,
                                  'jobs_per_round', per_round);
    RETURN NEXT;
END
$$;

--
-- Name: jobs_workflow_after_delete(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_workflow_after_delete() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_ended bigint[];
BEGIN
    DELETE FROM job_steps s USING deleted_jobs o WHERE s.job_id = o.id;
    DELETE FROM job_dependencies d USING deleted_jobs o
    WHERE d.child_id = o.id AND o.on_parent_failure IS NOT NULL;
    DELETE FROM job_batch_callbacks b USING deleted_jobs o
    WHERE b.job_id = o.id AND o.on_parent_failure IS NOT NULL;
    SELECT array_agg(o.id) INTO v_ended
    FROM deleted_jobs o
    WHERE o.has_dependents AND o.status NOT IN ('completed', 'failed', 'cancelled');
    IF v_ended IS NOT NULL THEN
        PERFORM jobs_workflow_resolve(v_ended);
    END IF;
    RETURN NULL;
END
$$;

--
-- Name: jobs_workflow_after_update(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_workflow_after_update() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_ended text := current_setting('jobprocessor.workflow_ended', true);
BEGIN
    IF v_ended <> '' AND current_setting('jobprocessor.workflow_resolving', true) IS DISTINCT FROM 'on' THEN
        PERFORM set_config('jobprocessor.workflow_ended', '', true);
        PERFORM jobs_workflow_resolve(string_to_array(v_ended, ',')::bigint[]);
    END IF;
    RETURN NULL;
END
$$;

--
-- Name: jobs_workflow_note_end(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_workflow_note_end() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM set_config('jobprocessor.workflow_ended',
                       concat_ws(',', nullif(current_setting('jobprocessor.workflow_ended', true), ''), NEW.id),
                       true);
    RETURN NULL;
END
$$;

--
-- Name: jobs_workflow_resolve(bigint[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.jobs_workflow_resolve(p_ended bigint[]) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_ended  bigint[] := p_ended;
    v_child  bigint[];
    v_n      integer[];
    v_failed bigint[];
    v_how    text[];
    v_next   text;
    v_outer  text := current_setting('jobprocessor.workflow_resolving', true);
BEGIN
    -- the statement trigger leaves the children cancelled below to this loop
    PERFORM set_config('jobprocessor.workflow_resolving', 'on', true);
    -- 1. lock the waiting children in id order; when one of the jobs ended other than completed, every waiting
    -- descendant the cascade can reach (the later levels of the loop find theirs locked already)
    IF EXISTS (SELECT 1 FROM unnest(v_ended) AS e(id) LEFT JOIN jobs j ON j.id = e.id
               WHERE j.status IS DISTINCT FROM 'completed') THEN
        PERFORM 1 FROM jobs j
        WHERE j.id IN (WITH RECURSIVE reach(id) AS (
                           SELECT d.child_id FROM job_dependencies d
                           WHERE d.parent_id = ANY(v_ended) AND NOT d.resolved
                           UNION
                           SELECT d.child_id FROM job_dependencies d JOIN reach r ON d.parent_id = r.id
                           WHERE NOT d.resolved)
                       SELECT reach.id FROM reach)
          AND j.status = 'waiting'
        ORDER BY j.id
        FOR NO KEY UPDATE OF j;
    ELSE
        PERFORM 1 FROM jobs j
        WHERE j.id IN (SELECT d.child_id FROM job_dependencies d
                       WHERE d.parent_id = ANY(v_ended) AND NOT d.resolved)
          AND j.status = 'waiting'
        ORDER BY j.id
        FOR NO KEY UPDATE OF j;
    END IF;

    LOOP
        -- 2. resolve the edges, each once; per child: how many resolved, and the first parent that did not complete
        WITH ended AS (
            SELECT e.id, CASE WHEN j.id IS NULL THEN 'was deleted'
                              WHEN j.status = 'completed' THEN NULL
                              WHEN j.status = 'cancelled' THEN 'was cancelled'
                              WHEN j.status = 'failed' THEN 'failed'
                              ELSE 'was deleted before it ended' END AS how
            FROM unnest(v_ended) AS e(id) LEFT JOIN jobs j ON j.id = e.id
        ), done AS (
            UPDATE job_dependencies d SET resolved = true
            FROM ended
            WHERE d.parent_id = ended.id AND NOT d.resolved
            RETURNING d.child_id, d.parent_id, ended.how
        ), per_child AS (
            SELECT done.child_id, count(*)::integer AS n,
                   min(done.parent_id) FILTER (WHERE done.how IS NOT NULL) AS failed_parent,
                   (array_agg(done.how ORDER BY done.parent_id) FILTER (WHERE done.how IS NOT NULL))[1] AS how
            FROM done GROUP BY done.child_id
        )
        SELECT array_agg(p.child_id), array_agg(p.n), array_agg(p.failed_parent), array_agg(p.how)
        INTO v_child, v_n, v_failed, v_how
        FROM per_child p;
        EXIT WHEN v_child IS NULL;

        -- 3. the children (a statement of its own: its snapshot sees what committed while step 1 waited). A child
        -- released gets run_at = now() at the earliest (its wait in line starts now, not at its enqueue); a batch
        -- callback gets the batch's counts. A cancelled child that has dependents is noted by the row trigger: it
        -- is the next level.
        UPDATE jobs j
        SET waits_for = j.waits_for - c.n,
            status = CASE WHEN c.failed_parent IS NOT NULL AND j.on_parent_failure IS DISTINCT FROM 'run'
                          THEN 'cancelled'
                          WHEN j.waits_for - c.n <= 0 THEN 'pending'
                          ELSE 'waiting' END,
            completed_at = CASE WHEN c.failed_parent IS NOT NULL AND j.on_parent_failure IS DISTINCT FROM 'run'
                                THEN now() ELSE j.completed_at END,
            last_error = CASE WHEN c.failed_parent IS NOT NULL AND j.on_parent_failure IS DISTINCT FROM 'run'
                              THEN format('cancelled: parent job %s %s', c.failed_parent, c.how)
                              ELSE j.last_error END,
            run_at = CASE WHEN (c.failed_parent IS NULL OR j.on_parent_failure = 'run') AND j.waits_for - c.n <= 0
                          THEN greatest(j.run_at, now()) ELSE j.run_at END,
            payload = CASE WHEN cb.batch_id IS NOT NULL AND j.waits_for - c.n <= 0
                           THEN j.payload || jsonb_build_object('batch', job_batch_summary(cb.batch_id))
                           ELSE j.payload END
        FROM unnest(v_child, v_n, v_failed, v_how) AS c(child_id, n, failed_parent, how)
        LEFT JOIN job_batch_callbacks cb ON cb.job_id = c.child_id
        WHERE j.id = c.child_id AND j.status = 'waiting';

        v_next := current_setting('jobprocessor.workflow_ended', true);
        EXIT WHEN v_next IS NULL OR v_next = '';
        PERFORM set_config('jobprocessor.workflow_ended', '', true);
        v_ended := string_to_array(v_next, ',')::bigint[];
    END LOOP;
    PERFORM set_config('jobprocessor.workflow_resolving', coalesce(v_outer, ''), true);
END
$$;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: dashboard_signin_failures; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.dashboard_signin_failures (
    client text NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT dashboard_signin_failures_client_check CHECK ((length(client) <= 100))
);

--
-- Name: TABLE dashboard_signin_failures; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.dashboard_signin_failures IS 'Failed dashboard sign-ins of the last minutes (the sign-in throttle).';

--
-- Name: job_actions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_actions (
    id bigint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    actor text NOT NULL,
    role text NOT NULL,
    action text NOT NULL,
    filter jsonb DEFAULT '{}'::jsonb NOT NULL,
    matched bigint,
    changed bigint DEFAULT 0 NOT NULL,
    status text DEFAULT 'running'::text NOT NULL,
    detail text,
    CONSTRAINT job_actions_action_check CHECK (((length(action) >= 1) AND (length(action) <= 50))),
    CONSTRAINT job_actions_actor_check CHECK ((actor = ANY (ARRAY['dashboard'::text, 'api'::text, 'cli'::text]))),
    CONSTRAINT job_actions_detail_check CHECK ((length(detail) <= 1000)),
    CONSTRAINT job_actions_role_check CHECK (((length(role) >= 1) AND (length(role) <= 50))),
    CONSTRAINT job_actions_status_check CHECK ((status = ANY (ARRAY['running'::text, 'done'::text, 'failed'::text])))
);

--
-- Name: TABLE job_actions; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.job_actions IS 'The action log: bulk retries and cancels, pauses, limits, schedules; see sql/README.md.';

--
-- Name: job_actions_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.job_actions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.job_actions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: job_batch_callbacks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_batch_callbacks (
    batch_id text NOT NULL,
    job_id bigint NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: job_dependencies; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_dependencies (
    parent_id bigint NOT NULL,
    child_id bigint NOT NULL,
    resolved boolean DEFAULT false NOT NULL
);

--
-- Name: job_pauses; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_pauses (
    id bigint NOT NULL,
    type text,
    store_id text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT job_pauses_something_check CHECK (((type IS NOT NULL) OR (store_id IS NOT NULL))),
    CONSTRAINT job_pauses_store_id_check CHECK ((store_id <> ''::text)),
    CONSTRAINT job_pauses_type_check CHECK ((type <> ''::text))
);

--
-- Name: TABLE job_pauses; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.job_pauses IS 'Paused job types, stores and store/type pairs; see sql/027_job_flow_control_v1.sql.';

--
-- Name: job_pauses_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.job_pauses ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.job_pauses_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: job_queue_alert_settings; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_queue_alert_settings (
    singleton boolean DEFAULT true NOT NULL,
    backlog_warning bigint DEFAULT 1000 NOT NULL,
    backlog_critical bigint DEFAULT 10000 NOT NULL,
    pending_age_warning_s bigint DEFAULT 300 NOT NULL,
    pending_age_critical_s bigint DEFAULT 3600 NOT NULL,
    lease_overrun_grace_s bigint DEFAULT 60 NOT NULL,
    failure_rate_warning numeric DEFAULT 0.10 NOT NULL,
    failure_rate_critical numeric DEFAULT 0.50 NOT NULL,
    failure_rate_min_jobs bigint DEFAULT 20 NOT NULL,
    no_tick_after_s bigint DEFAULT 300 NOT NULL,
    stuck_handler_after_s bigint DEFAULT 900 NOT NULL,
    store_lag_warning_s bigint DEFAULT 300 NOT NULL,
    store_lag_critical_s bigint DEFAULT 3600 NOT NULL,
    CONSTRAINT job_queue_alert_settings_backlog_critical_check CHECK ((backlog_critical > 0)),
    CONSTRAINT job_queue_alert_settings_backlog_warning_check CHECK ((backlog_warning > 0)),
    CONSTRAINT job_queue_alert_settings_failure_rate_critical_check CHECK (((failure_rate_critical >= (0)::numeric) AND (failure_rate_critical <= (1)::numeric))),
    CONSTRAINT job_queue_alert_settings_failure_rate_min_jobs_check CHECK ((failure_rate_min_jobs > 0)),
    CONSTRAINT job_queue_alert_settings_failure_rate_warning_check CHECK (((failure_rate_warning >= (0)::numeric) AND (failure_rate_warning <= (1)::numeric))),
    CONSTRAINT job_queue_alert_settings_lease_overrun_grace_s_check CHECK ((lease_overrun_grace_s >= 0)),
    CONSTRAINT job_queue_alert_settings_no_tick_after_s_check CHECK ((no_tick_after_s > 0)),
    CONSTRAINT job_queue_alert_settings_pending_age_critical_s_check CHECK ((pending_age_critical_s > 0)),
    CONSTRAINT job_queue_alert_settings_pending_age_warning_s_check CHECK ((pending_age_warning_s > 0)),
    CONSTRAINT job_queue_alert_settings_singleton CHECK (singleton),
    CONSTRAINT job_queue_alert_settings_store_lag_critical_s_check CHECK ((store_lag_critical_s > 0)),
    CONSTRAINT job_queue_alert_settings_store_lag_warning_s_check CHECK ((store_lag_warning_s > 0)),
    CONSTRAINT job_queue_alert_settings_stuck_handler_after_s_check CHECK ((stuck_handler_after_s > 0))
);

--
-- Name: TABLE job_queue_alert_settings; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.job_queue_alert_settings IS 'Thresholds of job_queue_alerts (one row); see sql/README.md.';

--
-- Name: COLUMN job_queue_alert_settings.backlog_warning; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.backlog_warning IS 'due pending jobs at which "backlog" warns';

--
-- Name: COLUMN job_queue_alert_settings.backlog_critical; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.backlog_critical IS 'due pending jobs at which "backlog" is critical';

--
-- Name: COLUMN job_queue_alert_settings.pending_age_warning_s; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.pending_age_warning_s IS 'seconds the oldest due pending job may wait before "pending_too_old" warns';

--
-- Name: COLUMN job_queue_alert_settings.pending_age_critical_s; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.pending_age_critical_s IS 'seconds of waiting at which "pending_too_old" is critical';

--
-- Name: COLUMN job_queue_alert_settings.lease_overrun_grace_s; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.lease_overrun_grace_s IS 'seconds a running job may stay past its lease (the next call rescues it) before "running_past_lease" fires';

--
-- Name: COLUMN job_queue_alert_settings.failure_rate_warning; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.failure_rate_warning IS 'failed / (completed + failed) over the last hour at which "failure_rate" warns';

--
-- Name: COLUMN job_queue_alert_settings.failure_rate_critical; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.failure_rate_critical IS 'failure rate at which "failure_rate" is critical';

--
-- Name: COLUMN job_queue_alert_settings.failure_rate_min_jobs; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.failure_rate_min_jobs IS 'finished jobs the last hour needs before its failure rate means anything';

--
-- Name: COLUMN job_queue_alert_settings.no_tick_after_s; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.no_tick_after_s IS 'seconds since the last /process-pending call started at which "no_tick" fires (critical while jobs are due)';

--
-- Name: COLUMN job_queue_alert_settings.stuck_handler_after_s; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.stuck_handler_after_s IS 'seconds a handler may run before "stuck_handler" fires (900: longer than any call''s budget)';

--
-- Name: COLUMN job_queue_alert_settings.store_lag_warning_s; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.store_lag_warning_s IS 'seconds a store''s oldest due job may wait (since its run_at) before "store_lag" fires for that store';

--
-- Name: COLUMN job_queue_alert_settings.store_lag_critical_s; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.job_queue_alert_settings.store_lag_critical_s IS 'seconds past which "store_lag" is critical';

--
-- Name: job_ticks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_ticks (
    id bigint NOT NULL,
    worker text NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    ended_at timestamp with time zone,
    job_limit integer NOT NULL,
    budget_s real NOT NULL,
    job_type text,
    rounds integer DEFAULT 0 NOT NULL,
    claimed integer DEFAULT 0 NOT NULL,
    succeeded integer DEFAULT 0 NOT NULL,
    retried integer DEFAULT 0 NOT NULL,
    failed integer DEFAULT 0 NOT NULL,
    released integer DEFAULT 0 NOT NULL,
    rescued integer DEFAULT 0 NOT NULL,
    abandoned integer DEFAULT 0 NOT NULL,
    lost integer DEFAULT 0 NOT NULL,
    busy_s real DEFAULT 0 NOT NULL
);

--
-- Name: TABLE job_ticks; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.job_ticks IS 'One row per /process-pending call: what it did; see sql/README.md.';

--
-- Name: jobs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.jobs (
    id bigint NOT NULL,
    type text NOT NULL,
    payload jsonb DEFAULT '{}'::jsonb NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    priority smallint DEFAULT 5 NOT NULL,
    store_id text,
    user_id text,
    run_at timestamp with time zone DEFAULT now() NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 3 NOT NULL,
    last_error text,
    result jsonb,
    locked_by text,
    locked_until timestamp with time zone,
    idempotency_key text,
    batch_id text,
    deferrals integer DEFAULT 0 NOT NULL,
    deferred_since timestamp with time zone,
    waits_for integer DEFAULT 0 NOT NULL,
    on_parent_failure text,
    has_dependents boolean DEFAULT false NOT NULL,
    singleton_key text,
    last_traceback text,
    CONSTRAINT jobs_attempts_check CHECK ((attempts >= 0)),
    CONSTRAINT jobs_max_attempts_check CHECK (((max_attempts >= 1) AND (max_attempts <= 100))),
    CONSTRAINT jobs_on_parent_failure_check CHECK ((on_parent_failure = ANY (ARRAY['cancel'::text, 'run'::text]))),
    CONSTRAINT jobs_priority_check CHECK (((priority >= 1) AND (priority <= 10))),
    CONSTRAINT jobs_status_check CHECK ((status = ANY (ARRAY['waiting'::text, 'pending'::text, 'running'::text, 'completed'::text, 'failed'::text, 'cancelled'::text]))),
    CONSTRAINT jobs_store_id_check CHECK ((store_id <> ''::text)),
    CONSTRAINT jobs_type_check CHECK (((type <> ''::text) AND (length(type) <= 200)))
)
WITH (fillfactor='90', autovacuum_vacuum_insert_threshold='1000', autovacuum_vacuum_insert_scale_factor='0.01', autovacuum_analyze_threshold='1000', autovacuum_analyze_scale_factor='0.01', vacuum_index_cleanup='on', autovacuum_vacuum_cost_delay='0', autovacuum_vacuum_threshold='10000', autovacuum_vacuum_scale_factor='0');

--
-- Name: COLUMN jobs.started_at; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.jobs.started_at IS 'when its current or last handler run started; NULL while only leased (claimed ahead of a free thread) or never run';

--
-- Name: COLUMN jobs.deferrals; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.jobs.deferrals IS 'times put off without spending an attempt (RetryLater, cut by a budget)';

--
-- Name: COLUMN jobs.deferred_since; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.jobs.deferred_since IS 'when it was first put off (NULL: never); see JOBS_MAX_DEFERRAL_S';

--
-- Name: COLUMN jobs.waits_for; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.jobs.waits_for IS 'parents whose end this job still waits for (status waiting until 0)';

--
-- Name: COLUMN jobs.on_parent_failure; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.jobs.on_parent_failure IS 'cancel | run: what a parent that ends other than completed does to this job; NULL: the job has no parents';

--
-- Name: COLUMN jobs.has_dependents; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.jobs.has_dependents IS 'other jobs wait for this one to end (its end resolves them)';

--
-- Name: COLUMN jobs.singleton_key; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.jobs.singleton_key IS 'at most one job per key is waiting, pending or running (jobs_singleton_key_idx)';

--
-- Name: COLUMN jobs.last_traceback; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.jobs.last_traceback IS 'traceback of the error in last_error (bounded); NULL: none';

--
-- Name: job_queue_alerts; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.job_queue_alerts AS
 WITH s AS (
         SELECT job_queue_alert_settings.singleton,
            job_queue_alert_settings.backlog_warning,
            job_queue_alert_settings.backlog_critical,
            job_queue_alert_settings.pending_age_warning_s,
            job_queue_alert_settings.pending_age_critical_s,
            job_queue_alert_settings.lease_overrun_grace_s,
            job_queue_alert_settings.failure_rate_warning,
            job_queue_alert_settings.failure_rate_critical,
            job_queue_alert_settings.failure_rate_min_jobs,
            job_queue_alert_settings.no_tick_after_s,
            job_queue_alert_settings.stuck_handler_after_s,
            job_queue_alert_settings.store_lag_warning_s,
            job_queue_alert_settings.store_lag_critical_s
           FROM public.job_queue_alert_settings
          WHERE job_queue_alert_settings.singleton
        ), due AS (
         SELECT count(*) AS n,
            EXTRACT(epoch FROM (now() - min(jobs.run_at))) AS oldest_wait_s
           FROM public.jobs
          WHERE ((jobs.status = 'pending'::text) AND (jobs.run_at <= now()))
        ), overrun AS (
         SELECT count(*) AS n,
            EXTRACT(epoch FROM (now() - min(jobs.locked_until))) AS worst_s
           FROM public.jobs,
            s
          WHERE ((jobs.status = 'running'::text) AND (jobs.locked_until < (now() - make_interval(secs => (s.lease_overrun_grace_s)::double precision))))
        ), ticks AS (
         SELECT max(job_ticks.started_at) AS last_started,
            EXTRACT(epoch FROM (now() - max(job_ticks.started_at))) AS age_s
           FROM public.job_ticks
        ), stuck AS (
         SELECT count(*) AS n,
            EXTRACT(epoch FROM (now() - min(jobs.started_at))) AS worst_s
           FROM public.jobs,
            s
          WHERE ((jobs.status = 'running'::text) AND (jobs.started_at < (now() - make_interval(secs => (s.stuck_handler_after_s)::double precision))))
        ), last_hour AS (
         SELECT count(*) FILTER (WHERE (jobs.status = 'failed'::text)) AS failed,
            count(*) AS finished
           FROM public.jobs
          WHERE ((jobs.status = ANY (ARRAY['completed'::text, 'failed'::text])) AND (jobs.completed_at > (now() - '01:00:00'::interval)))
        )
 SELECT 'backlog'::text AS alert,
        CASE
            WHEN (due.n >= s.backlog_critical) THEN 'critical'::text
            ELSE 'warning'::text
        END AS severity,
    (due.n)::numeric AS value,
    (
        CASE
            WHEN (due.n >= s.backlog_critical) THEN s.backlog_critical
            ELSE s.backlog_warning
        END)::numeric AS threshold,
    format('%s jobs are due and waiting (warning at %s, critical at %s)'::text, due.n, s.backlog_warning, s.backlog_critical) AS message
   FROM due,
    s
  WHERE (due.n >= s.backlog_warning)
UNION ALL
 SELECT 'pending_too_old'::text AS alert,
        CASE
            WHEN (due.oldest_wait_s >= (s.pending_age_critical_s)::numeric) THEN 'critical'::text
            ELSE 'warning'::text
        END AS severity,
    round(due.oldest_wait_s, 1) AS value,
    (
        CASE
            WHEN (due.oldest_wait_s >= (s.pending_age_critical_s)::numeric) THEN s.pending_age_critical_s
            ELSE s.pending_age_warning_s
        END)::numeric AS threshold,
    format('the oldest due pending job has waited %s s since its run_at (warning at %s s, critical at %s s)'::text, round(due.oldest_wait_s), s.pending_age_warning_s, s.pending_age_critical_s) AS message
   FROM due,
    s
  WHERE (due.oldest_wait_s >= (s.pending_age_warning_s)::numeric)
UNION ALL
 SELECT 'running_past_lease'::text AS alert,
        CASE
            WHEN (overrun.worst_s >= ((10 * GREATEST(s.lease_overrun_grace_s, (6)::bigint)))::numeric) THEN 'critical'::text
            ELSE 'warning'::text
        END AS severity,
    (overrun.n)::numeric AS value,
    (s.lease_overrun_grace_s)::numeric AS threshold,
    format('%s running jobs are past their lease by up to %s s: their worker died and no call has rescued them (is the cron calling /process-pending?)'::text, overrun.n, round(overrun.worst_s)) AS message
   FROM overrun,
    s
  WHERE (overrun.n > 0)
UNION ALL
 SELECT 'failure_rate'::text AS alert,
        CASE
            WHEN (((last_hour.failed)::numeric / (last_hour.finished)::numeric) >= s.failure_rate_critical) THEN 'critical'::text
            ELSE 'warning'::text
        END AS severity,
    round(((last_hour.failed)::numeric / (last_hour.finished)::numeric), 4) AS value,
        CASE
            WHEN (((last_hour.failed)::numeric / (last_hour.finished)::numeric) >= s.failure_rate_critical) THEN s.failure_rate_critical
            ELSE s.failure_rate_warning
        END AS threshold,
    format('%s of the %s jobs finished in the last hour failed (%s%%; warning at %s%%, critical at %s%%)'::text, last_hour.failed, last_hour.finished, round(((100.0 * (last_hour.failed)::numeric) / (last_hour.finished)::numeric), 1), round(((100)::numeric * s.failure_rate_warning), 1), round(((100)::numeric * s.failure_rate_critical), 1)) AS message
   FROM last_hour,
    s
  WHERE ((last_hour.finished >= s.failure_rate_min_jobs) AND (((last_hour.failed)::numeric / (last_hour.finished)::numeric) >= s.failure_rate_warning))
UNION ALL
 SELECT 'no_tick'::text AS alert,
        CASE
            WHEN (due.n > 0) THEN 'critical'::text
            ELSE 'warning'::text
        END AS severity,
    round(COALESCE(ticks.age_s, due.oldest_wait_s), 1) AS value,
    (s.no_tick_after_s)::numeric AS threshold,
        CASE
            WHEN (ticks.last_started IS NULL) THEN format('no /process-pending call has been recorded yet and %s jobs are due, the oldest for %s s: is the cron set up?'::text, due.n, round(due.oldest_wait_s))
            ELSE format('the last /process-pending call started %s s ago (warning at %s s%s): is the cron still calling?'::text, round(ticks.age_s), s.no_tick_after_s,
            CASE
                WHEN (due.n > 0) THEN format('; %s jobs are due'::text, due.n)
                ELSE ''::text
            END)
        END AS message
   FROM ticks,
    due,
    s
  WHERE ((ticks.age_s >= (s.no_tick_after_s)::numeric) OR ((ticks.last_started IS NULL) AND (due.oldest_wait_s >= (s.no_tick_after_s)::numeric)))
UNION ALL
 SELECT 'stuck_handler'::text AS alert,
    'warning'::text AS severity,
    (stuck.n)::numeric AS value,
    (s.stuck_handler_after_s)::numeric AS threshold,
    format('%s handlers have been running for up to %s s (warning at %s s): their process keeps their lease while the thread lives; look for a hung call in the worker''s log'::text, stuck.n, round(stuck.worst_s), s.stuck_handler_after_s) AS message
   FROM stuck,
    s
  WHERE (stuck.n > 0)
UNION ALL
 SELECT 'store_lag'::text AS alert,
        CASE
            WHEN (l.wait_s >= (s.store_lag_critical_s)::double precision) THEN 'critical'::text
            ELSE 'warning'::text
        END AS severity,
    round((l.wait_s)::numeric, 1) AS value,
    (
        CASE
            WHEN (l.wait_s >= (s.store_lag_critical_s)::double precision) THEN s.store_lag_critical_s
            ELSE s.store_lag_warning_s
        END)::numeric AS threshold,
    format('store %s: its oldest due job (priority %s) has waited %s s since its run_at (warning at %s s, critical at %s s)'::text, COALESCE(l.store_id, '(jobs without a store)'::text), l.priority, round((l.wait_s)::numeric), s.store_lag_warning_s, s.store_lag_critical_s) AS message
   FROM (s
     CROSS JOIN LATERAL public.job_store_lag((s.store_lag_warning_s)::double precision, 20) l(store_id, priority, oldest_run_at, wait_s))
UNION ALL
 SELECT 'alert_settings_missing'::text AS alert,
    'critical'::text AS severity,
    NULL::numeric AS value,
    NULL::numeric AS threshold,
    'job_queue_alert_settings has no row: no other alert can fire; re-run sql/052_queue_health_v1.sql, sql/058_queue_health_v2.sql and sql/061_queue_health_v4.sql'::text AS message
  WHERE (NOT (EXISTS ( SELECT 1
           FROM public.job_queue_alert_settings)));

--
-- Name: VIEW job_queue_alerts; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON VIEW public.job_queue_alerts IS 'The queue alerts that fire now, with severity and message; see sql/README.md.';

--
-- Name: job_queue_health; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.job_queue_health AS
 WITH counted AS (
         SELECT jobs.status,
            jobs.created_at,
            NULL::interval AS duration
           FROM public.jobs
          WHERE (jobs.status = 'waiting'::text)
        UNION ALL
         SELECT jobs.status,
            jobs.created_at,
            NULL::interval
           FROM public.jobs
          WHERE (jobs.status = 'pending'::text)
        UNION ALL
         SELECT jobs.status,
            jobs.created_at,
            (now() - jobs.started_at)
           FROM public.jobs
          WHERE (jobs.status = 'running'::text)
        UNION ALL
         SELECT jobs.status,
            jobs.created_at,
            (jobs.completed_at - jobs.started_at)
           FROM public.jobs
          WHERE ((jobs.status = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text])) AND (jobs.completed_at > (now() - '24:00:00'::interval)))
        ), per_status AS (
         SELECT counted.status,
            count(*) AS n,
            avg(counted.duration) AS avg_duration,
            max(counted.created_at) AS latest,
            min(counted.created_at) AS oldest
           FROM counted
          GROUP BY counted.status
        )
 SELECT s.status,
    COALESCE(p.n, (0)::bigint) AS count,
    round(EXTRACT(epoch FROM p.avg_duration), 3) AS avg_duration_seconds,
    p.latest AS latest_created_at,
    p.oldest AS oldest_created_at,
    round(EXTRACT(epoch FROM (now() - p.oldest)), 3) AS oldest_age_seconds
   FROM (( VALUES (0,'waiting'::text), (1,'pending'::text), (2,'running'::text), (3,'completed'::text), (4,'failed'::text), (5,'cancelled'::text)) s(ord, status)
     LEFT JOIN per_status p ON ((p.status = s.status)))
  ORDER BY s.ord;

--
-- Name: VIEW job_queue_health; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON VIEW public.job_queue_health IS 'Per status: count, avg duration, newest/oldest created_at, oldest age; all waiting/pending/running, finished in 24 h.';

--
-- Name: job_schedules; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_schedules (
    name text NOT NULL,
    cron text NOT NULL,
    job_type text NOT NULL,
    payload jsonb DEFAULT '{}'::jsonb NOT NULL,
    priority smallint DEFAULT 5 NOT NULL,
    enabled boolean DEFAULT true NOT NULL,
    next_run_at timestamp with time zone NOT NULL,
    last_enqueued_at timestamp with time zone,
    last_job_id bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT job_schedules_cron_check CHECK (((cron <> ''::text) AND (length(cron) <= 200))),
    CONSTRAINT job_schedules_job_type_check CHECK (((job_type <> ''::text) AND (length(job_type) <= 200))),
    CONSTRAINT job_schedules_name_check CHECK (((name <> ''::text) AND (length(name) <= 200))),
    CONSTRAINT job_schedules_priority_check CHECK (((priority >= 1) AND (priority <= 10)))
);

--
-- Name: TABLE job_schedules; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.job_schedules IS 'Recurring jobs: 5-field cron (UTC); see sql/README.md and `flask jobs schedule`.';

--
-- Name: job_steps; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_steps (
    job_id bigint NOT NULL,
    name text NOT NULL,
    result jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT job_steps_name_check CHECK (((name <> ''::text) AND (length(name) <= 200)))
);

--
-- Name: job_store_arrivals; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_store_arrivals (
    id bigint NOT NULL,
    store_key text NOT NULL,
    priority smallint NOT NULL,
    run_at timestamp with time zone NOT NULL,
    type text
)
WITH (autovacuum_vacuum_threshold='200', autovacuum_vacuum_scale_factor='0.05', autovacuum_vacuum_cost_delay='0');

--
-- Name: job_store_arrivals_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.job_store_arrivals ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.job_store_arrivals_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: job_store_limits; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_store_limits (
    store_id text,
    type text,
    max_running integer,
    max_starts_per_minute integer,
    weight integer,
    openai_tokens_per_minute integer,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT job_store_limits_max_running_check CHECK ((max_running >= 0)),
    CONSTRAINT job_store_limits_max_starts_check CHECK ((max_starts_per_minute >= 0)),
    CONSTRAINT job_store_limits_per_store_check CHECK (((type IS NULL) OR ((weight IS NULL) AND (openai_tokens_per_minute IS NULL)))),
    CONSTRAINT job_store_limits_store_id_check CHECK ((store_id <> ''::text)),
    CONSTRAINT job_store_limits_tokens_check CHECK ((openai_tokens_per_minute >= 1)),
    CONSTRAINT job_store_limits_type_check CHECK ((type <> ''::text)),
    CONSTRAINT job_store_limits_weight_check CHECK (((weight >= 1) AND (weight <= 1000)))
);

--
-- Name: TABLE job_store_limits; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.job_store_limits IS 'Per-store limits and weights (store_id NULL: every store); see sql/027_job_flow_control_v1.sql.';

--
-- Name: job_store_queues; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_store_queues (
    store_key text NOT NULL,
    priority smallint NOT NULL,
    head_lb timestamp with time zone NOT NULL,
    served_at timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    served_pos integer DEFAULT 0 NOT NULL,
    wait_from timestamp with time zone GENERATED ALWAYS AS (GREATEST(head_lb, served_at)) STORED,
    types text[],
    type_heads timestamp with time zone[]
)
WITH (fillfactor='70', autovacuum_vacuum_threshold='500', autovacuum_vacuum_scale_factor='0.05', autovacuum_vacuum_cost_delay='0');

--
-- Name: job_store_quota_holds; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_store_quota_holds (
    store_key text NOT NULL,
    type text NOT NULL,
    until timestamp with time zone NOT NULL
);

--
-- Name: TABLE job_store_quota_holds; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.job_store_quota_holds IS 'Store/type pairs whose OpenAI token quota is spent, until when (claims leave their jobs alone until then).';

--
-- Name: job_store_starts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_store_starts (
    id bigint NOT NULL,
    store_key text NOT NULL,
    type text NOT NULL,
    claimed_at timestamp with time zone NOT NULL,
    jobs integer NOT NULL,
    CONSTRAINT job_store_starts_jobs_check CHECK ((jobs > 0))
);

--
-- Name: TABLE job_store_starts; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.job_store_starts IS 'Jobs claimed per claim, store and type, for max_starts_per_minute; rows older than a minute mean nothing.';

--
-- Name: job_store_starts_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.job_store_starts ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.job_store_starts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: job_ticks_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.job_ticks ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.job_ticks_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: job_type_runtimes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_type_runtimes (
    type text NOT NULL,
    recent_s real[] DEFAULT '{}'::real[] NOT NULL,
    runs bigint DEFAULT 0 NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT job_type_runtimes_type_check CHECK ((type <> ''::text))
);

--
-- Name: TABLE job_type_runtimes; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.job_type_runtimes IS 'Recent successful run times per job type (the tick''s start rule); see sql/README.md.';

--
-- Name: jobs_archive; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.jobs_archive (
    id bigint NOT NULL,
    type text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL,
    priority smallint NOT NULL,
    store_id text,
    user_id text,
    run_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    last_error text,
    result jsonb,
    locked_by text,
    locked_until timestamp with time zone,
    idempotency_key text,
    batch_id text,
    archived_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: jobs_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.jobs ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME public.jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: openai_output_retry_caps; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.openai_output_retry_caps (
    job_id bigint NOT NULL,
    cap integer NOT NULL,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT openai_output_retry_caps_cap_check CHECK ((cap > 0))
);

--
-- Name: openai_output_stats; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.openai_output_stats (
    job_type text NOT NULL,
    model text NOT NULL,
    weights double precision[] DEFAULT '{}'::double precision[] NOT NULL,
    answers bigint DEFAULT 0 NOT NULL,
    cut_offs bigint DEFAULT 0 NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT openai_output_stats_job_type_check CHECK ((job_type <> ''::text)),
    CONSTRAINT openai_output_stats_model_check CHECK ((model <> ''::text))
);

--
-- Name: rate_limiter; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rate_limiter (
    name text NOT NULL,
    request_free_at timestamp with time zone DEFAULT now() NOT NULL,
    token_free_at timestamp with time zone DEFAULT now() NOT NULL,
    hold_until timestamp with time zone DEFAULT now() NOT NULL,
    window_second bigint DEFAULT 0 NOT NULL,
    window_requests integer[] DEFAULT '{}'::integer[] NOT NULL,
    window_tokens bigint[] DEFAULT '{}'::bigint[] NOT NULL,
    reserved_requests bigint DEFAULT 0 NOT NULL,
    reserved_tokens bigint DEFAULT 0 NOT NULL,
    settled_requests bigint DEFAULT 0 NOT NULL,
    settled_reserved_tokens bigint DEFAULT 0 NOT NULL,
    sent_requests bigint DEFAULT 0 NOT NULL,
    used_tokens bigint DEFAULT 0 NOT NULL,
    throttled bigint DEFAULT 0 NOT NULL,
    error_streak integer DEFAULT 0 NOT NULL,
    server_remaining_requests bigint,
    server_remaining_tokens bigint,
    server_seen_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    window_charged bigint[] DEFAULT '{}'::bigint[] NOT NULL,
    CONSTRAINT rate_limiter_name_check CHECK ((name <> ''::text))
);

--
-- Name: rate_limiter_waits; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rate_limiter_waits (
    job_id bigint NOT NULL,
    name text NOT NULL,
    until timestamp with time zone NOT NULL
);

--
-- Name: trigger_replays; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.trigger_replays (
    method text NOT NULL,
    key text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT trigger_replays_key_check CHECK (((length(key) >= 1) AND (length(key) <= 256))),
    CONSTRAINT trigger_replays_method_check CHECK ((method = ANY (ARRAY['qstash'::text, 'hmac'::text])))
);

--
-- Name: job_actions job_actions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_actions
    ADD CONSTRAINT job_actions_pkey PRIMARY KEY (id);

--
-- Name: job_batch_callbacks job_batch_callbacks_job_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_batch_callbacks
    ADD CONSTRAINT job_batch_callbacks_job_id_key UNIQUE (job_id);

--
-- Name: job_batch_callbacks job_batch_callbacks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_batch_callbacks
    ADD CONSTRAINT job_batch_callbacks_pkey PRIMARY KEY (batch_id);

--
-- Name: job_dependencies job_dependencies_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_dependencies
    ADD CONSTRAINT job_dependencies_pkey PRIMARY KEY (parent_id, child_id);

--
-- Name: job_pauses job_pauses_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_pauses
    ADD CONSTRAINT job_pauses_pkey PRIMARY KEY (id);

--
-- Name: job_queue_alert_settings job_queue_alert_settings_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_queue_alert_settings
    ADD CONSTRAINT job_queue_alert_settings_pkey PRIMARY KEY (singleton);

--
-- Name: job_schedules job_schedules_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_schedules
    ADD CONSTRAINT job_schedules_pkey PRIMARY KEY (name);

--
-- Name: job_steps job_steps_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_steps
    ADD CONSTRAINT job_steps_pkey PRIMARY KEY (job_id, name);

--
-- Name: job_store_arrivals job_store_arrivals_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_store_arrivals
    ADD CONSTRAINT job_store_arrivals_pkey PRIMARY KEY (id);

--
-- Name: job_store_queues job_store_queues_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_store_queues
    ADD CONSTRAINT job_store_queues_pkey PRIMARY KEY (store_key, priority);

--
-- Name: job_store_quota_holds job_store_quota_holds_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_store_quota_holds
    ADD CONSTRAINT job_store_quota_holds_pkey PRIMARY KEY (store_key, type);

--
-- Name: job_store_starts job_store_starts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_store_starts
    ADD CONSTRAINT job_store_starts_pkey PRIMARY KEY (id);

--
-- Name: job_ticks job_ticks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_ticks
    ADD CONSTRAINT job_ticks_pkey PRIMARY KEY (id);

--
-- Name: job_type_runtimes job_type_runtimes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_type_runtimes
    ADD CONSTRAINT job_type_runtimes_pkey PRIMARY KEY (type);

--
-- Name: jobs_archive jobs_archive_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jobs_archive
    ADD CONSTRAINT jobs_archive_pkey PRIMARY KEY (id);

--
-- Name: jobs jobs_idempotency_key_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_idempotency_key_key UNIQUE (idempotency_key);

--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

--
-- Name: openai_output_retry_caps openai_output_retry_caps_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.openai_output_retry_caps
    ADD CONSTRAINT openai_output_retry_caps_pkey PRIMARY KEY (job_id);

--
-- Name: openai_output_stats openai_output_stats_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.openai_output_stats
    ADD CONSTRAINT openai_output_stats_pkey PRIMARY KEY (job_type, model);

--
-- Name: rate_limiter rate_limiter_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rate_limiter
    ADD CONSTRAINT rate_limiter_pkey PRIMARY KEY (name);

--
-- Name: rate_limiter_waits rate_limiter_waits_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rate_limiter_waits
    ADD CONSTRAINT rate_limiter_waits_pkey PRIMARY KEY (job_id);

--
-- Name: trigger_replays trigger_replays_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.trigger_replays
    ADD CONSTRAINT trigger_replays_pkey PRIMARY KEY (method, key);

--
-- Name: dashboard_signin_failures_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX dashboard_signin_failures_at_idx ON public.dashboard_signin_failures USING btree (at);

--
-- Name: dashboard_signin_failures_client_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX dashboard_signin_failures_client_idx ON public.dashboard_signin_failures USING btree (client, at);

--
-- Name: job_dependencies_child_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX job_dependencies_child_idx ON public.job_dependencies USING btree (child_id);

--
-- Name: job_pauses_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX job_pauses_key ON public.job_pauses USING btree (COALESCE(store_id, ''::text), COALESCE(type, ''::text));

--
-- Name: job_schedules_due_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX job_schedules_due_idx ON public.job_schedules USING btree (next_run_at) WHERE enabled;

--
-- Name: job_store_limits_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX job_store_limits_key ON public.job_store_limits USING btree (COALESCE(store_id, ''::text), COALESCE(type, ''::text));

--
-- Name: job_store_queues_wait_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX job_store_queues_wait_idx ON public.job_store_queues USING btree (priority, wait_from, served_pos, head_lb, store_key);

--
-- Name: job_store_quota_holds_until_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX job_store_quota_holds_until_idx ON public.job_store_quota_holds USING btree (until);

--
-- Name: job_store_starts_store_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX job_store_starts_store_idx ON public.job_store_starts USING btree (store_key, claimed_at);

--
-- Name: job_ticks_started_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX job_ticks_started_idx ON public.job_ticks USING btree (started_at);

--
-- Name: jobs_batch_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_batch_idx ON public.jobs USING btree (batch_id, status) WHERE (batch_id IS NOT NULL);

--
-- Name: jobs_claim_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_claim_idx ON public.jobs USING btree (priority, run_at, id) WHERE (status = 'pending'::text);

--
-- Name: jobs_fair_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_fair_idx ON public.jobs USING btree (priority, COALESCE(store_id, ''::text), run_at, id) INCLUDE (store_id) WHERE (status = 'pending'::text);

--
-- Name: jobs_fair_type_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_fair_type_idx ON public.jobs USING btree (type, priority, COALESCE(store_id, ''::text), run_at, id) INCLUDE (store_id) WHERE (status = 'pending'::text);

--
-- Name: jobs_finished_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_finished_idx ON public.jobs USING btree (status, completed_at) WHERE (status = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text]));

--
-- Name: jobs_running_lease_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_running_lease_idx ON public.jobs USING btree (locked_until) WHERE (status = 'running'::text);

--
-- Name: jobs_singleton_key_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX jobs_singleton_key_idx ON public.jobs USING btree (singleton_key) WHERE ((singleton_key IS NOT NULL) AND (status = ANY (ARRAY['waiting'::text, 'pending'::text, 'running'::text])));

--
-- Name: jobs_store_status_finished_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_store_status_finished_idx ON public.jobs USING btree (store_id, status, id) WHERE ((store_id IS NOT NULL) AND (status = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text])));

--
-- Name: jobs_store_status_live_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_store_status_live_idx ON public.jobs USING btree (store_id, status, id) WHERE ((store_id IS NOT NULL) AND (status = ANY (ARRAY['pending'::text, 'running'::text])));

--
-- Name: jobs_type_status_finished_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_type_status_finished_idx ON public.jobs USING btree (type, status, id) WHERE (status = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text]));

--
-- Name: jobs_type_status_live_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_type_status_live_idx ON public.jobs USING btree (type, status, id) WHERE (status = ANY (ARRAY['pending'::text, 'running'::text]));

--
-- Name: jobs_user_store_status_finished_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_user_store_status_finished_idx ON public.jobs USING btree (user_id, store_id, status, id) WHERE ((user_id IS NOT NULL) AND (status = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text])));

--
-- Name: jobs_user_store_status_live_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_user_store_status_live_idx ON public.jobs USING btree (user_id, store_id, status, id) WHERE ((user_id IS NOT NULL) AND (status = ANY (ARRAY['pending'::text, 'running'::text])));

--
-- Name: jobs_waiting_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_waiting_idx ON public.jobs USING btree (id) WHERE (status = 'waiting'::text);

--
-- Name: rate_limiter_waits_until_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rate_limiter_waits_until_idx ON public.rate_limiter_waits USING btree (name, until);

--
-- Name: trigger_replays_expires_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX trigger_replays_expires_idx ON public.trigger_replays USING btree (expires_at);

--
-- Name: jobs jobs_store_queues_on_insert; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER jobs_store_queues_on_insert AFTER INSERT ON public.jobs REFERENCING NEW TABLE AS inserted_jobs FOR EACH STATEMENT EXECUTE FUNCTION public.jobs_note_inserted_pending();

--
-- Name: jobs jobs_store_queues_on_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER jobs_store_queues_on_update AFTER UPDATE ON public.jobs FOR EACH ROW WHEN (((new.status = 'pending'::text) AND ((old.status <> 'pending'::text) OR (new.run_at < old.run_at) OR (new.priority <> old.priority) OR (new.store_id IS DISTINCT FROM old.store_id) OR (new.type <> old.type)))) EXECUTE FUNCTION public.jobs_note_updated_pending();

--
-- Name: jobs jobs_workflow_after_delete; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER jobs_workflow_after_delete AFTER DELETE ON public.jobs REFERENCING OLD TABLE AS deleted_jobs FOR EACH STATEMENT EXECUTE FUNCTION public.jobs_workflow_after_delete();

--
-- Name: jobs jobs_workflow_after_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER jobs_workflow_after_update AFTER UPDATE ON public.jobs FOR EACH STATEMENT EXECUTE FUNCTION public.jobs_workflow_after_update();

--
-- Name: jobs jobs_workflow_on_end; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER jobs_workflow_on_end AFTER UPDATE ON public.jobs FOR EACH ROW WHEN ((new.has_dependents AND (new.status = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text])) AND (old.status <> ALL (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text])))) EXECUTE FUNCTION public.jobs_workflow_note_end();

--
-- PostgreSQL database dump complete
--
