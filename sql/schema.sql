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
-- Name: jobs_fair_ask; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.jobs_fair_ask AS (
	rank integer,
	store_key text,
	via_types text[],
	after_run timestamp with time zone,
	after_id bigint,
	take integer,
	head_id bigint
);

--
-- Name: jobs_fair_queue; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.jobs_fair_queue AS (
	store_key text,
	via_types text[],
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
	live boolean
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
    wanted            text[];       -- the types this claim takes: p_types sorted, without duplicates (NULL: all)
    skip_ids          bigint[] := coalesce(p_skip, '{}');
    slots_left        integer := p_limit;
    -- 1. merge arrivals
    widened_levels    smallint[] := '{}';  -- rows this claim widened: it must not tighten them (sql/025)
    widened_stores    text[] := '{}';
    arrival_levels    smallint[];   -- levels with arrivals left: their stores are read beside the directory
    -- 2. levels
    cur_level         smallint;     -- the level being shared out
    horizon           timestamptz;  -- a read of the directory skips rows whose wait_from is later: a store served
                                    -- by a claim that committed during this one is still read (its turn is
                                    -- earlier than the horizon)
    -- 3. read the directory (per level)
    by_type_bound     boolean;      -- reading in order of the one wanted type's bounds (3a') rather than wait order
    more_rows         boolean;      -- the level may have rows not read yet
    after_wait        timestamptz;  -- keyset cursor: the order key of the last row read -- (wait_from, served_pos,
    after_pos         integer;      -- head_lb, store_key), or in 3a' the same with the type's head for head_lb --
    after_head        timestamptz;  -- which is also a lower bound of the rank (for the wanted types) of every row
    after_store       text;         -- not read yet
    chunk_size        integer;      -- rows per read: the stores still needed + 8, plus the candidates not placed
                                    -- yet (a level that places few of the stores it reads is read in growing chunks)
    rows_read         integer;
    rows_out_of_order integer;      -- 3a, a claim of one type: rows whose bound for that type lies beyond the edge
    last_wait         timestamptz;
    last_pos          integer;
    last_head         timestamptz;
    last_store        text;
    read_stores       text[];       -- stores read at this level: a row a concurrent claim has just served moves
                                    -- behind the cursor, and would come round again
    chunk             jobs_fair_queue[];  -- the rows just read that may hold a wanted type (how to read each)
    chunk_unknown     text[];       -- of those, the rows whose types are not known: tightened in 6.
    chunk_empty       text[];       -- the stores read with nothing wanted due: tightened in 6.
    candidates        jobs_fair_queue[];
    pool              jobs_fair_queue[];  -- candidates not placed yet
    placed            jobs_fair_queue[];
    tighten_levels    smallint[] := '{}';
    tighten_stores    text[] := '{}';
    -- 4./5. the level's queues in rank order, and the steps that give them jobs
    queues            jobs_fair_queue[];
    live_queues       integer;
    step              text;
    partial_at        integer;      -- in a partial round: the next queue to ask (NULL: none under way)
    round_share       integer;
    asks              jobs_fair_ask[];
    step_ranks        integer[];    -- the queues the step asked: their liveness is settled after it
    got_ranks         integer[];    -- what the step got, in (rank, run_at, id) order
    got_ids           bigint[];
    got_runs          timestamptz[];
    kept_ranks        integer[];
    kept_ids          bigint[];
    kept_runs         timestamptz[];
    deferred_ranks    integer[];    -- 5.: jobs found for stores another caller is serving, taken last
    deferred_ids      bigint[];
    deferred_runs     timestamptz[];
    r                 integer;
    -- every job claimed, with its place in the claim order (level, round, rank)
    claimed_ids       bigint[] := '{}';
    claimed_stores    text[] := '{}';
    claimed_levels    smallint[] := '{}';
    claimed_rounds    integer[] := '{}';
    claimed_ranks     integer[] := '{}';
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RETURN;
    END IF;
    -- flow control: paused types would leave `wanted` here
    IF p_types IS NOT NULL THEN
        wanted := ARRAY(SELECT DISTINCT t.type FROM unnest(p_types) AS t(type) WHERE t.type IS NOT NULL
                        ORDER BY t.type);
        IF cardinality(wanted) = 0 THEN
            RETURN;  -- no type wanted: nothing to claim
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
        -- 2. LEVELS: the next one with a row that may hold a due job, or an arrival left (whether it holds a wanted
        -- one is for 3. to find: a filter here would walk the same rows of other types once more)
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
        live_queues := 0;
        partial_at := NULL;
        pool := '{}';
        read_stores := '{}';
        by_type_bound := false;
        more_rows := true;
        after_wait := '-infinity'; after_pos := -2147483648; after_head := '-infinity'; after_store := '';
        IF cur_level = ANY (arrival_levels) THEN
            -- the stores of the arrivals left at this level: their heads read first (their row, if any, may not
            -- cover the arrival's job yet), into the pool; not read again from the directory at this level
            SELECT coalesce(array_agg(c.store_key), '{}'),
                   coalesce(array_agg(ROW(c.store_key, c.via_types, c.served_at, greatest(c.head_run, c.served_at),
                                          coalesce(c.served_pos, 0), c.head_run, c.head_id, '-infinity', 0, 0, 0,
                                          NULL, false)::jobs_fair_queue)
                            FILTER (WHERE c.head_run <= now()), '{}')
            INTO read_stores, pool
            FROM (SELECT e.store_key, o.served_at, o.served_pos, v.via_types, h.head_run, h.head_id
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
                  LEFT JOIN LATERAL jobs_fair_head(cur_level, e.store_key, v.via_types, wanted, skip_ids) AS h
                         ON true
                  WHERE wanted IS NULL OR k.types IS NULL OR k.types && wanted) AS c;
        END IF;

        <<steps>>
        LOOP
            step := CASE
                WHEN slots_left = 0 THEN 'level done'
                -- whole rounds share the slots among every store of the level: read on until all are known, unless
                -- more stores are placed than slots are left (then a partial round among the first-ranked follows)
                WHEN more_rows AND partial_at IS NULL AND live_queues <= slots_left THEN 'read the directory'
                -- a partial round that has asked every store placed so far needs the next ones
                WHEN more_rows AND partial_at > cardinality(queues) THEN 'read the directory'
                WHEN partial_at IS NULL AND live_queues = 0 THEN 'level done'
                WHEN partial_at IS NULL AND live_queues <= slots_left THEN 'whole rounds'
                WHEN partial_at IS NULL OR partial_at <= cardinality(queues) THEN 'partial round'
                ELSE 'deferred stores'  -- the partial round has asked every store of the level
            END;
            EXIT steps WHEN step = 'level done';
            asks := '{}';
            step_ranks := '{}';
            got_ranks := '{}'; got_ids := '{}'; got_runs := '{}';

            IF step = 'read the directory' THEN
                -----------------------------------------------------------------------------------------------------
                -- 3. READ THE DIRECTORY: the next chunk of the level's rows, the heads of their stores, and the stores
                -- now certain to rank first. Rows are read in wait_from order, through job_store_queues_wait_idx
                -- (3a); the order key of the last row read bounds the rank of every row not read yet, for any
                -- types. A claim for one type whose rows hold other types too can find that bound far below the
                -- ranks it meets (the type's jobs come later in each store than the store's oldest job): then it
                -- reads on in order of each row's bound for that type -- type_heads, a scan of the level's rows --
                -- whose last one bounds the rows not read yet just as well (3a').
                -----------------------------------------------------------------------------------------------------
                horizon := clock_timestamp();
                -- as many rows as stores are still needed (whole rounds: one more than the slots left over the live
                -- queues; a partial round that ran past them: the slots left), + 8, + the candidates not placed yet
                chunk_size := CASE WHEN partial_at IS NULL THEN slots_left - live_queues + 1 ELSE slots_left END
                              + 8 + cardinality(pool);
                IF NOT by_type_bound THEN
                    -- 3a. in wait order
                    WITH chunk AS (
                        SELECT q.store_key, q.types, q.type_heads, q.served_at, q.served_pos, q.head_lb,
                               q.wait_from,
                               row_number() OVER (ORDER BY q.wait_from, q.served_pos, q.head_lb, q.store_key) AS nth
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
                        SELECT (array_agg(c.wait_from ORDER BY c.nth DESC))[1] AS e_wait,
                               (array_agg(c.served_pos ORDER BY c.nth DESC))[1] AS e_pos,
                               (array_agg(c.head_lb ORDER BY c.nth DESC))[1] AS e_head,
                               (array_agg(c.store_key ORDER BY c.nth DESC))[1] AS e_store
                        FROM chunk c
                    )
                    SELECT count(*)::integer,
                           coalesce(array_agg(ROW(c.store_key,
                                                  CASE WHEN wanted IS NULL OR c.types <@ wanted THEN NULL
                                                       ELSE coalesce(c.types, wanted) END,
                                                  c.served_at, NULL, c.served_pos, NULL, NULL, '-infinity', 0, 0, 0,
                                                  NULL, false)::jobs_fair_queue ORDER BY c.nth), '{}'),
                           coalesce(array_agg(c.store_key) FILTER (WHERE c.types IS NULL), '{}'),
                           -- for a claim of one type: the rows whose bound for that type is beyond the edge (the
                           -- wait order cannot place them now)
                           count(*) FILTER (WHERE cardinality(wanted) = 1 AND c.types && wanted
                                              AND (greatest(c.type_heads[array_position(c.types, wanted[1])],
                                                            c.served_at),
                                                   c.served_pos, c.type_heads[array_position(c.types, wanted[1])],
                                                   c.store_key) >= (e.e_wait, e.e_pos, e.e_head, e.e_store))::integer,
                           min(e.e_wait), min(e.e_pos), min(e.e_head), min(e.e_store)
                    INTO rows_read, chunk, chunk_unknown, rows_out_of_order, last_wait, last_pos, last_head,
                         last_store
                    FROM chunk c
                    CROSS JOIN edge e;
                ELSE
                    -- 3a'. in order of each row's bound for the one wanted type: greatest(its type head, its turn)
                    WITH chunk AS (
                        SELECT q.store_key, q.served_at, q.served_pos, q.type_head, q.bound_wait,
                               row_number() OVER (ORDER BY q.bound_wait, q.served_pos, q.type_head, q.store_key) AS nth
                        FROM (SELECT q.store_key, q.served_at, q.served_pos, b.type_head,
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
                           coalesce(array_agg(ROW(c.store_key, wanted, c.served_at, NULL, c.served_pos, NULL, NULL,
                                                  '-infinity', 0, 0, 0, NULL, false)::jobs_fair_queue ORDER BY c.nth),
                                    '{}'),
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
                    -- most of these rows could not be placed now: read the level again by the type's bounds (3a'),
                    -- without probing these (3a' reads them again, in their order)
                    by_type_bound := true;
                    after_wait := '-infinity'; after_pos := -2147483648; after_head := '-infinity'; after_store := '';
                    CONTINUE steps;
                END IF;
                IF more_rows THEN
                    after_wait := last_wait; after_pos := last_pos; after_head := last_head; after_store := last_store;
                ELSE  -- every row read: nothing left to bound
                    after_wait := 'infinity'; after_pos := 2147483647; after_head := 'infinity'; after_store := '';
                END IF;

                -- 3b. the heads of the stores read (one probe each; of each wanted type they hold, when they hold
                -- others too): a store with a due one is a candidate, with its exact rank; the others are tightened
                -- in 6., as are rows whose types are not known
                SELECT coalesce(array_agg(ROW(c.store_key, c.via_types, c.turn_at, greatest(h.head_run, c.turn_at),
                                              c.rank_pos, h.head_run, h.head_id, '-infinity', 0, 0, 0, NULL,
                                              false)::jobs_fair_queue)
                                FILTER (WHERE h.head_run <= now()), '{}'),
                       coalesce(array_agg(c.store_key) FILTER (WHERE h.head_run IS NULL OR h.head_run > now()), '{}')
                INTO candidates, chunk_empty
                FROM unnest(chunk) AS c
                LEFT JOIN LATERAL jobs_fair_head(cur_level, c.store_key, c.via_types, wanted, skip_ids) AS h ON true;
                read_stores := read_stores || ARRAY(SELECT c.store_key FROM unnest(chunk) AS c);
                pool := pool || candidates;
                chunk_empty := chunk_empty || chunk_unknown;
                tighten_stores := tighten_stores || chunk_empty;
                tighten_levels := tighten_levels || array_fill(cur_level, ARRAY[cardinality(chunk_empty)]);

                -- 3c. place the candidates whose rank is below the bound of every row not read yet, in rank order.
                -- Flow control: a store's allowance (its cap, max_running, starts per minute) and its paused types
                -- would be set here, 0 leaving it out.
                SELECT coalesce(array_agg(c ORDER BY c.rank_wait, c.rank_pos, c.head_run, c.store_key)
                                FILTER (WHERE (c.rank_wait, c.rank_pos, c.head_run, c.store_key)
                                              < (after_wait, after_pos, after_head, after_store)), '{}'),
                       coalesce(array_agg(c) FILTER (WHERE (c.rank_wait, c.rank_pos, c.head_run, c.store_key)
                                                           >= (after_wait, after_pos, after_head, after_store)), '{}')
                INTO placed, pool
                FROM unnest(pool) AS c;
                FOR k IN 1 .. cardinality(placed) LOOP
                    r := cardinality(queues) + 1;
                    queues[r] := placed[k];
                    -- p_max_per_store counts what the store got at the levels above
                    queues[r].allowance := least(p_limit, p_max_per_store - cardinality(array_positions(
                                                              claimed_stores, placed[k].store_key)));
                    queues[r].live := queues[r].allowance > 0;
                END LOOP;

            ELSIF step = 'whole rounds' THEN
                -----------------------------------------------------------------------------------------------------
                -- 4. WHOLE ROUNDS: every live queue is owed round_share more jobs (fewer under its cap)
                -----------------------------------------------------------------------------------------------------
                round_share := slots_left / live_queues;  -- flow control: weights would share the slots here
                FOR r IN 1 .. cardinality(queues) LOOP
                    CONTINUE WHEN NOT queues[r].live;
                    queues[r].owed := least(round_share, queues[r].allowance);
                    asks := asks || ROW(r, queues[r].store_key, queues[r].via_types, queues[r].after_run,
                                        queues[r].after_id, queues[r].owed, NULL)::jobs_fair_ask;
                    step_ranks := step_ranks || r;
                END LOOP;

            ELSIF step = 'partial round' THEN
                -----------------------------------------------------------------------------------------------------
                -- 5. PARTIAL ROUND: one job per queue in rank order, asked in batches of as many queues as slots
                -- are left; a queue's first job at the level is its head, asked for by primary key
                -----------------------------------------------------------------------------------------------------
                IF partial_at IS NULL THEN
                    partial_at := 1;
                    deferred_ranks := '{}'; deferred_ids := '{}'; deferred_runs := '{}';
                END IF;
                WHILE partial_at <= cardinality(queues) AND cardinality(asks) < slots_left LOOP
                    r := partial_at;
                    partial_at := partial_at + 1;
                    CONTINUE WHEN NOT queues[r].live;
                    queues[r].owed := 1;
                    asks := asks || ROW(r, queues[r].store_key, queues[r].via_types, queues[r].after_run,
                                        queues[r].after_id, 1,
                                        CASE WHEN queues[r].taken = 0 THEN queues[r].head_id END)::jobs_fair_ask;
                    step_ranks := step_ranks || r;
                END LOOP;

            ELSE  -- 'deferred stores'
                -- 5. (end) the partial round asked every store of the level: the jobs set aside, in rank order, as
                -- long as slots are left (a job found but not taken is unlocked when the claim commits)
                got_ranks := deferred_ranks[1:slots_left];
                got_ids := deferred_ids[1:slots_left];
                got_runs := deferred_runs[1:slots_left];
                step_ranks := got_ranks;
                partial_at := NULL;
            END IF;

            IF cardinality(asks) > 0 THEN
                -----------------------------------------------------------------------------------------------------
                -- 4./5. THE LOCKED READ of what the step asks: each ask's head by primary key when it names one
                -- (and it is still pending, due, wanted and not locked by another caller), else its next `take`
                -- due jobs after its cursor in (run_at, id) order. Every read is FOR UPDATE SKIP LOCKED: a row
                -- another caller is claiming is skipped, not waited for, and a row changed since the snapshot has
                -- every condition checked again (EvalPlanQual), so a job claimed and committed meanwhile stays out.
                -----------------------------------------------------------------------------------------------------
                WITH ask AS (
                    SELECT * FROM unnest(asks)
                ), heads AS (
                    SELECT a.rank, j.id, j.run_at
                    FROM ask a
                    JOIN jobs j ON j.id = a.head_id
                    WHERE j.status = 'pending' AND j.priority = cur_level AND coalesce(j.store_id, '') = a.store_key
                      AND j.run_at <= now() AND (wanted IS NULL OR j.type = ANY (wanted)) AND j.id <> ALL (skip_ids)
                    FOR UPDATE OF j SKIP LOCKED
                ), rest AS (
                    SELECT a.* FROM ask a WHERE NOT EXISTS (SELECT 1 FROM heads h WHERE h.rank = a.rank)
                ), got AS (
                    SELECT h.rank, h.id, h.run_at FROM heads h
                    UNION ALL
                    -- a store whose every type is wanted: one read of jobs_fair_idx
                    SELECT a.rank, n.id, n.run_at
                    FROM rest a
                    CROSS JOIN LATERAL (SELECT j.id, j.run_at
                                        FROM jobs j
                                        WHERE a.via_types IS NULL AND j.status = 'pending' AND j.priority = cur_level
                                          AND coalesce(j.store_id, '') = a.store_key AND j.run_at <= now()
                                          AND (j.run_at, j.id) > (a.after_run, a.after_id)
                                          AND (wanted IS NULL OR j.type = ANY (wanted)) AND j.id <> ALL (skip_ids)
                                        ORDER BY j.run_at, j.id
                                        LIMIT a.take
                                        FOR UPDATE OF j SKIP LOCKED) AS n
                    UNION ALL
                    -- a store that also holds unwanted types: one read of jobs_fair_type_idx per wanted type it
                    -- holds, and of those jobs the first `take` in (run_at, id) order (the others read here stay
                    -- locked until the claim commits: another caller skips them meanwhile)
                    SELECT m.rank, m.id, m.run_at
                    FROM (SELECT a.rank, a.take, n.id, n.run_at,
                                 row_number() OVER (PARTITION BY a.rank ORDER BY n.run_at, n.id) AS nth
                          FROM rest a
                          CROSS JOIN LATERAL (SELECT u.type FROM unnest(a.via_types) AS u(type)
                                              WHERE u.type = ANY (wanted)) AS t
                          CROSS JOIN LATERAL (SELECT j.id, j.run_at
                                              FROM jobs j
                                              WHERE j.status = 'pending' AND j.type = t.type
                                                AND j.priority = cur_level AND coalesce(j.store_id, '') = a.store_key
                                                AND j.run_at <= now() AND (j.run_at, j.id) > (a.after_run, a.after_id)
                                                AND j.id <> ALL (skip_ids)
                                              ORDER BY j.run_at, j.id
                                              LIMIT a.take
                                              FOR UPDATE OF j SKIP LOCKED) AS n) AS m
                    WHERE m.nth <= m.take
                )
                SELECT coalesce(array_agg(g.rank ORDER BY g.rank, g.run_at, g.id), '{}'),
                       coalesce(array_agg(g.id ORDER BY g.rank, g.run_at, g.id), '{}'),
                       coalesce(array_agg(g.run_at ORDER BY g.rank, g.run_at, g.id), '{}')
                INTO got_ranks, got_ids, got_runs
                FROM got g;
            END IF;

            IF step = 'partial round' THEN
                -- a queue whose first job here is not its head: another caller holds the head, so it is serving
                -- that store right now; its job is set aside until every store nobody is serving has been asked
                kept_ranks := '{}'; kept_ids := '{}'; kept_runs := '{}';
                FOR k IN 1 .. cardinality(got_ranks) LOOP
                    r := got_ranks[k];
                    IF queues[r].taken = 0 AND got_ids[k] <> queues[r].head_id THEN
                        deferred_ranks := deferred_ranks || r;
                        deferred_ids := deferred_ids || got_ids[k];
                        deferred_runs := deferred_runs || got_runs[k];
                        queues[r].owed := 0;  -- it has its job: it stays live
                    ELSE
                        kept_ranks := kept_ranks || r; kept_ids := kept_ids || got_ids[k];
                        kept_runs := kept_runs || got_runs[k];
                    END IF;
                END LOOP;
                got_ranks := kept_ranks; got_ids := kept_ids; got_runs := kept_runs;
            END IF;

            -- take what the step got: the one place a job becomes this claim's
            FOR k IN 1 .. cardinality(got_ranks) LOOP
                r := got_ranks[k];
                queues[r].taken := queues[r].taken + 1;
                queues[r].owed := greatest(queues[r].owed - 1, 0);
                queues[r].allowance := queues[r].allowance - 1;
                queues[r].after_run := got_runs[k];
                queues[r].after_id := got_ids[k];
                claimed_ids := claimed_ids || got_ids[k];
                claimed_stores := claimed_stores || queues[r].store_key;
                claimed_levels := claimed_levels || cur_level;
                claimed_rounds := claimed_rounds || queues[r].taken;
                claimed_ranks := claimed_ranks || r;
                slots_left := slots_left - 1;
            END LOOP;
            -- a queue the step asked stays live if it gave all it was asked for (a job set aside counts) and may
            -- take more; one that gave less has no lockable due job left
            FOREACH r IN ARRAY step_ranks LOOP
                queues[r].live := queues[r].owed = 0 AND queues[r].allowance > 0;
            END LOOP;
            live_queues := (SELECT count(*)::integer FROM unnest(queues) AS q WHERE q.live);
        END LOOP steps;
    END LOOP levels;

    -------------------------------------------------------------------------------------------------------------------
    -- 6. TURNS: rows found with nothing due (of the wanted types) are made exact, except the ones this claim widened;
    -- the stores served get their turn
    -------------------------------------------------------------------------------------------------------------------
    IF cardinality(tighten_stores) > 0 THEN
        PERFORM job_store_queues_tighten(array_agg(t.priority), array_agg(t.store_key))
        FROM unnest(tighten_levels, tighten_stores) AS t(priority, store_key)
        WHERE NOT EXISTS (SELECT 1 FROM unnest(widened_levels, widened_stores) AS w(priority, store_key)
                          WHERE w.priority = t.priority AND w.store_key = t.store_key)
        HAVING count(*) > 0;
    END IF;

    IF cardinality(claimed_ids) = 0 THEN
        RETURN;
    END IF;
    PERFORM job_store_queues_serve(array_agg(s.store_key), array_agg(s.pos))
    FROM (SELECT c.store_key, max(c.pos)::integer AS pos
          FROM (SELECT u.store_key, row_number() OVER (ORDER BY u.priority, u.round, u.rank) AS pos
                FROM unnest(claimed_stores, claimed_levels, claimed_rounds, claimed_ranks)
                     AS u(store_key, priority, round, rank)) AS c
          GROUP BY c.store_key) AS s;

    RETURN QUERY
        SELECT u.id, (row_number() OVER (ORDER BY u.priority, u.round, u.rank))::integer
        FROM unnest(claimed_ids, claimed_levels, claimed_rounds, claimed_ranks) AS u(id, priority, round, rank);
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
            job_queue_alert_settings.stuck_handler_after_s
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
 SELECT 'alert_settings_missing'::text AS alert,
    'critical'::text AS severity,
    NULL::numeric AS value,
    NULL::numeric AS threshold,
    'job_queue_alert_settings has no row: no other alert can fire; re-run sql/052_queue_health_v1.sql and sql/058_queue_health_v2.sql'::text AS message
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
-- Name: job_schedules_due_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX job_schedules_due_idx ON public.job_schedules USING btree (next_run_at) WHERE enabled;

--
-- Name: job_store_queues_wait_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX job_store_queues_wait_idx ON public.job_store_queues USING btree (priority, wait_from, served_pos, head_lb, store_key);

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
