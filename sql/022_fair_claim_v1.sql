-- Fair claiming across stores, v1: the table of store turns and the function jobs_fair_claim(). Applied by Alembic
-- revision 0002_fair_claim (after 020 and 021, whose indexes it reads) and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/022_fair_claim_v1.sql
-- Idempotent (IF NOT EXISTS, CREATE OR REPLACE). Locks: none on jobs; creating the table takes nothing others wait
-- on. Never edit this file once released: add a _v2 file instead.
--
-- The rule (jobprocessor/policies/fairness.py is the same rule in Python, and the tests hold the two together):
--   * priority is global: a priority level gets slots only when every due job of the levels above it has one;
--   * within a level, slots are shared max-min fairly (water-filling) among the stores with due jobs, in rounds:
--     the r-th job of each store belongs to round r, rounds are served in order, and the last, partial round goes
--     to the stores that have waited longest; a store that needs less leaves the rest to the others, so the claim
--     takes min(limit, due jobs): it is work-conserving;
--   * "waited longest": since the store's oldest due job became due, or since the store was last served (its row
--     in job_store_turns), whichever is later; ties go to the store served earlier in the last call's order, then
--     to the oldest job. Serving a store restarts its wait, so with more stores than slots every store is served
--     in turn over successive calls (round-robin, no starvation), even when a store's jobs were all enqueued at
--     once and share one run_at;
--   * within a store: priority, run_at, id;
--   * p_max_per_store (JOBS_MAX_PER_STORE), when set, caps the jobs one store gets in one call, across levels.

SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- When each store was last served, and where its last job stood in that call's claim order. One row per store
-- ever served (jobs without a store: store_key ''); small, and only the claim writes it.
CREATE TABLE IF NOT EXISTS job_store_turns (
    store_key  text        PRIMARY KEY,
    served_at  timestamptz NOT NULL,
    served_pos integer     NOT NULL
);

-- One batch of per-store reads: for each queue i, its next `take` due jobs after its cursor (run_at, id), locked.
-- The recheck of every condition here on a row that changed since the snapshot (status = 'pending' first) is what
-- keeps a job claimed by a concurrent caller out. Output ordered by queue, then the store's own order.
CREATE OR REPLACE FUNCTION jobs_fair_claim_probe(p_level smallint, p_type text, p_skip bigint[], p_i integer[],
                                                 p_store text[], p_run timestamptz[], p_id bigint[],
                                                 p_take integer[])
RETURNS TABLE (i integer, id bigint, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
AS $fn$
#variable_conflict use_column
BEGIN
    IF p_type IS NULL THEN
        RETURN QUERY
            SELECT b.i, x.id, x.run_at
            FROM unnest(p_i, p_store, p_run, p_id, p_take) AS b(i, store, run_at, id, take)
            CROSS JOIN LATERAL (
                SELECT j.id, j.run_at
                FROM jobs j
                WHERE j.status = 'pending' AND j.priority = p_level AND coalesce(j.store_id, '') = b.store
                  AND j.run_at <= now() AND (j.run_at, j.id) > (b.run_at, b.id) AND j.id <> ALL (p_skip)
                ORDER BY j.run_at, j.id
                LIMIT b.take
                FOR UPDATE OF j SKIP LOCKED) x
            ORDER BY b.i, x.run_at, x.id;
    ELSE
        RETURN QUERY
            SELECT b.i, x.id, x.run_at
            FROM unnest(p_i, p_store, p_run, p_id, p_take) AS b(i, store, run_at, id, take)
            CROSS JOIN LATERAL (
                SELECT j.id, j.run_at
                FROM jobs j
                WHERE j.status = 'pending' AND j.type = p_type AND j.priority = p_level
                  AND coalesce(j.store_id, '') = b.store
                  AND j.run_at <= now() AND (j.run_at, j.id) > (b.run_at, b.id) AND j.id <> ALL (p_skip)
                ORDER BY j.run_at, j.id
                LIMIT b.take
                FOR UPDATE OF j SKIP LOCKED) x
            ORDER BY b.i, x.run_at, x.id;
    END IF;
END
$fn$;

-- The shape, and why (the claim statement in jobprocessor/queries.py calls this function as its `due` step, then
-- updates what it returns in the same statement):
--   1. Levels are visited in priority order, one index probe finding the next level with a pending job; a level is
--      visited only while slots are left, so a full urgent level costs nothing below it, and a level with nothing
--      due costs one more probe (jobs_claim_idx): with nothing due, the claim is a handful of index probes.
--   2. The level's stores: a loose index scan over jobs_fair_idx (a recursive CTE, one probe per store) yields each
--      store's oldest pending job, kept when it is due. This is the claim's main cost: about one index descent per
--      store waiting at the level, and never a read of a big store's backlog.
--   3. Water-filling without counting backlogs: with `a` stores still able to take jobs and `left` slots, every one
--      of them is owed at least floor(left / a) (the water level cannot be lower), so each takes that many at once
--      (fewer if it runs out, or hits its cap, and then it drops out). This repeats until left < a: that is the
--      partial round, served in rank order, one job per store, until the slots are gone. Rows read in all: about
--      the jobs claimed plus one probe per store touched, never min(backlog, limit) per store.
--   4. Every read of jobs to claim is `ORDER BY run_at, id LIMIT n FOR UPDATE SKIP LOCKED` from a per-store cursor:
--      a row another caller is claiming is skipped (no waiting, no double claim) and the next one is taken; a row
--      claimed and committed after this statement's snapshot fails the recheck of `status = 'pending'`
--      (EvalPlanQual) and is skipped too. Rows are locked as they are chosen, so under concurrency a caller still
--      fills its slots from what is left.
--   5. In the partial round, a store whose oldest job another caller holds (its head is locked or already gone) is
--      being served by that caller right now: it waits until the stores nobody is serving had their turn, so
--      concurrent callers spread over stores instead of all serving the same ones.
--   6. p_skip: the jobs the calling statement has already changed (its rescue of expired leases). A VOLATILE
--      function sees its caller's earlier changes, so it would take a job the rescue just made pending, which the
--      claim's UPDATE cannot change a second time in the same statement: such jobs wait for the next call.
--   7. The stores served get their turn row refreshed (served_at = now()), and none of this waits for another
--      caller: a row another caller is refreshing is skipped (SKIP LOCKED); a store's first row is inserted only by
--      the caller holding the transaction-scoped advisory lock (class 20223, key hashtext(store)) -- an INSERT
--      racing another caller's uncommitted insert of the same key would wait for it (and two callers inserting
--      overlapping stores in different orders could deadlock). The skipped caller loses nothing: the other one
--      writes the same time.
-- Plans: every statement is static, so PL/pgSQL prepares it once per session. A `type` filter switches to the same
-- statements over jobs_fair_type_idx.
CREATE OR REPLACE FUNCTION jobs_fair_claim(p_limit integer, p_type text DEFAULT NULL,
                                           p_max_per_store integer DEFAULT NULL, p_skip bigint[] DEFAULT '{}')
RETURNS TABLE (job_id bigint, claim_order integer)
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_left    integer := p_limit;  -- slots still free
    v_level   smallint;            -- the priority level being shared out
    v_n       integer;             -- queues at the level (one per store with a due job)
    v_active  integer;             -- of which may still take a job (q_live)
    v_share   integer;
    v_pos     integer;
    v_q       integer;
    v_oldest  timestamptz;         -- the level's oldest pending job: nothing due when later than now()
    r         record;
    -- the level's queues in rank order (index = rank)
    q_store   text[];
    q_head    bigint[];            -- id of the queue's oldest due job when the level was read
    q_run     timestamptz[];       -- cursor: the (run_at, id) of the last job taken from the queue
    q_id      bigint[];
    q_taken   integer[];           -- jobs taken from the queue at this level: its round
    q_allow   integer[];           -- jobs its store may still take (p_max_per_store; p_limit when unset)
    q_live    boolean[];           -- may still have a lockable due job, and room under the cap
    q_owed    integer[];           -- in a whole-rounds batch: jobs asked of the queue and not given yet
    -- one probe batch: which queues, their cursors, and how many jobs each may take
    b_i       integer[];
    b_store   text[];
    b_run     timestamptz[];
    b_id      bigint[];
    b_take    integer[];
    -- partial round: jobs found for stores another caller is serving (taken last, if slots remain)
    f_i       integer[];
    f_id      bigint[];
    f_run     timestamptz[];
    -- every job claimed, and its place in the claim order (priority, round, rank)
    c_id      bigint[] := '{}';
    c_store   text[] := '{}';
    c_prio    smallint[] := '{}';
    c_round   integer[] := '{}';
    c_rank    integer[] := '{}';
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RETURN;
    END IF;
    -- 1. the first level with a pending job
    IF p_type IS NULL THEN
        SELECT j.priority INTO v_level FROM jobs j WHERE j.status = 'pending' ORDER BY j.priority LIMIT 1;
    ELSE
        SELECT j.priority INTO v_level FROM jobs j WHERE j.status = 'pending' AND j.type = p_type
        ORDER BY j.priority LIMIT 1;
    END IF;

    WHILE v_level IS NOT NULL AND v_left > 0 LOOP
        -- 2. the level's queues with a due job, ranked by how long their store has waited (a level whose jobs
        -- are all scheduled later costs one probe of jobs_claim_idx, not one per store)
        IF p_type IS NULL THEN
            -- ORDER BY ... LIMIT 1: answered by the first entry of jobs_claim_idx whatever the statistics say
            SELECT j.run_at INTO v_oldest FROM jobs j WHERE j.status = 'pending' AND j.priority = v_level
            ORDER BY j.run_at LIMIT 1;
        END IF;
        IF p_type IS NULL AND (v_oldest IS NULL OR v_oldest > now()) THEN
            q_store := NULL;
        ELSIF p_type IS NULL THEN
            WITH RECURSIVE heads AS (
                (SELECT coalesce(j.store_id, '') AS store, j.run_at, j.id
                 FROM jobs j
                 WHERE j.status = 'pending' AND j.priority = v_level AND j.id <> ALL (p_skip)
                 ORDER BY coalesce(j.store_id, ''), j.run_at, j.id
                 LIMIT 1)
                UNION ALL
                SELECT nxt.store, nxt.run_at, nxt.id
                FROM heads h
                CROSS JOIN LATERAL (
                    SELECT coalesce(j.store_id, '') AS store, j.run_at, j.id
                    FROM jobs j
                    WHERE j.status = 'pending' AND j.priority = v_level AND coalesce(j.store_id, '') > h.store
                      AND j.id <> ALL (p_skip)
                    ORDER BY coalesce(j.store_id, ''), j.run_at, j.id
                    LIMIT 1) nxt
            )
            SELECT array_agg(o.store), array_agg(o.id)
            INTO q_store, q_head
            FROM (SELECT h.store, h.id
                  FROM heads h
                  LEFT JOIN job_store_turns t ON t.store_key = h.store
                  WHERE h.run_at <= now()
                  ORDER BY greatest(h.run_at, t.served_at), coalesce(t.served_pos, 0), h.run_at, h.id) o;
        ELSE
            WITH RECURSIVE heads AS (
                (SELECT coalesce(j.store_id, '') AS store, j.run_at, j.id
                 FROM jobs j
                 WHERE j.status = 'pending' AND j.type = p_type AND j.priority = v_level AND j.id <> ALL (p_skip)
                 ORDER BY coalesce(j.store_id, ''), j.run_at, j.id
                 LIMIT 1)
                UNION ALL
                SELECT nxt.store, nxt.run_at, nxt.id
                FROM heads h
                CROSS JOIN LATERAL (
                    SELECT coalesce(j.store_id, '') AS store, j.run_at, j.id
                    FROM jobs j
                    WHERE j.status = 'pending' AND j.type = p_type AND j.priority = v_level
                      AND coalesce(j.store_id, '') > h.store AND j.id <> ALL (p_skip)
                    ORDER BY coalesce(j.store_id, ''), j.run_at, j.id
                    LIMIT 1) nxt
            )
            SELECT array_agg(o.store), array_agg(o.id)
            INTO q_store, q_head
            FROM (SELECT h.store, h.id
                  FROM heads h
                  LEFT JOIN job_store_turns t ON t.store_key = h.store
                  WHERE h.run_at <= now()
                  ORDER BY greatest(h.run_at, t.served_at), coalesce(t.served_pos, 0), h.run_at, h.id) o;
        END IF;

        v_n := coalesce(cardinality(q_store), 0);
        v_active := v_n;
        IF v_n > 0 THEN
            q_run := array_fill('-infinity'::timestamptz, ARRAY[v_n]);
            q_id := array_fill(0::bigint, ARRAY[v_n]);
            q_taken := array_fill(0, ARRAY[v_n]);
            q_live := array_fill(true, ARRAY[v_n]);
            q_owed := array_fill(0, ARRAY[v_n]);
            IF p_max_per_store IS NULL OR cardinality(c_store) = 0 THEN
                q_allow := array_fill(least(p_limit, coalesce(p_max_per_store, p_limit)), ARRAY[v_n]);
            ELSE  -- the cap counts what the store got at the levels above
                SELECT array_agg(p_max_per_store - coalesce(got.n, 0) ORDER BY s.i)
                INTO q_allow
                FROM unnest(q_store) WITH ORDINALITY AS s(store, i)
                LEFT JOIN (SELECT u.store, count(*)::integer AS n FROM unnest(c_store) AS u(store) GROUP BY u.store)
                     AS got ON got.store = s.store;
                FOR i IN 1 .. v_n LOOP
                    IF q_allow[i] <= 0 THEN
                        q_live[i] := false;
                        v_active := v_active - 1;
                    END IF;
                END LOOP;
            END IF;
        END IF;

        -- 3. water-filling
        WHILE v_left > 0 AND v_active > 0 LOOP
            v_share := v_left / v_active;
            IF v_share >= 1 THEN
                -- whole rounds: every live queue is owed v_share more jobs (fewer under its cap)
                b_i := '{}'; b_store := '{}'; b_run := '{}'; b_id := '{}'; b_take := '{}';
                FOR i IN 1 .. v_n LOOP
                    IF q_live[i] THEN
                        q_owed[i] := least(v_share, q_allow[i]);
                        b_i := b_i || i; b_store := b_store || q_store[i]; b_run := b_run || q_run[i];
                        b_id := b_id || q_id[i]; b_take := b_take || q_owed[i];
                    END IF;
                END LOOP;
                FOR r IN SELECT * FROM jobs_fair_claim_probe(v_level, p_type, p_skip, b_i, b_store, b_run, b_id,
                                                             b_take)
                LOOP
                    q_owed[r.i] := q_owed[r.i] - 1;
                    q_taken[r.i] := q_taken[r.i] + 1;
                    q_run[r.i] := r.run_at; q_id[r.i] := r.id;
                    q_allow[r.i] := q_allow[r.i] - 1;
                    c_id := c_id || r.id; c_store := c_store || q_store[r.i]; c_prio := c_prio || v_level;
                    c_round := c_round || q_taken[r.i]; c_rank := c_rank || r.i;
                    v_left := v_left - 1;
                END LOOP;
                -- a queue that gave fewer than it owed has no lockable due job left
                FOREACH v_q IN ARRAY b_i LOOP
                    IF q_owed[v_q] > 0 OR q_allow[v_q] <= 0 THEN
                        q_live[v_q] := false;
                        v_active := v_active - 1;
                    END IF;
                END LOOP;
                CONTINUE;
            END IF;

            -- the partial round (fewer slots than live queues): one job each, in rank order, until the slots are
            -- gone; probed in batches of as many queues as slots remain
            f_i := '{}'; f_id := '{}'; f_run := '{}';
            v_pos := 1;
            WHILE v_left > 0 AND v_pos <= v_n LOOP
                b_i := '{}'; b_store := '{}'; b_run := '{}'; b_id := '{}'; b_take := '{}';
                WHILE v_pos <= v_n AND cardinality(b_i) < v_left LOOP
                    IF q_live[v_pos] THEN
                        b_i := b_i || v_pos; b_store := b_store || q_store[v_pos]; b_run := b_run || q_run[v_pos];
                        b_id := b_id || q_id[v_pos]; b_take := b_take || 1;
                        q_live[v_pos] := false;  -- until the probe finds it a job
                        v_active := v_active - 1;
                    END IF;
                    v_pos := v_pos + 1;
                END LOOP;
                EXIT WHEN cardinality(b_i) = 0;
                FOR r IN SELECT * FROM jobs_fair_claim_probe(v_level, p_type, p_skip, b_i, b_store, b_run, b_id,
                                                             b_take)
                LOOP
                    IF q_taken[r.i] = 0 AND r.id <> q_head[r.i] THEN
                        -- 5. another caller holds this store's oldest job: it is serving the store right now
                        f_i := f_i || r.i; f_id := f_id || r.id; f_run := f_run || r.run_at;
                        q_live[r.i] := true;
                        v_active := v_active + 1;
                        CONTINUE;
                    END IF;
                    q_taken[r.i] := q_taken[r.i] + 1;
                    q_run[r.i] := r.run_at; q_id[r.i] := r.id;
                    q_allow[r.i] := q_allow[r.i] - 1;
                    IF q_allow[r.i] > 0 THEN
                        q_live[r.i] := true;
                        v_active := v_active + 1;
                    END IF;
                    c_id := c_id || r.id; c_store := c_store || q_store[r.i]; c_prio := c_prio || v_level;
                    c_round := c_round || q_taken[r.i]; c_rank := c_rank || r.i;
                    v_left := v_left - 1;
                END LOOP;
            END LOOP;
            -- the stores deferred by 5., in rank order, if slots remain (a job found but not taken is unlocked
            -- when the claim commits)
            FOR k IN 1 .. cardinality(f_i) LOOP
                EXIT WHEN v_left <= 0;
                v_q := f_i[k];
                q_taken[v_q] := q_taken[v_q] + 1;
                q_run[v_q] := f_run[k]; q_id[v_q] := f_id[k];
                q_allow[v_q] := q_allow[v_q] - 1;
                IF q_allow[v_q] <= 0 THEN
                    q_live[v_q] := false;
                    v_active := v_active - 1;
                END IF;
                c_id := c_id || f_id[k]; c_store := c_store || q_store[v_q]; c_prio := c_prio || v_level;
                c_round := c_round || q_taken[v_q]; c_rank := c_rank || v_q;
                v_left := v_left - 1;
            END LOOP;
        END LOOP;

        -- 1. the next level with a pending job
        IF p_type IS NULL THEN
            SELECT j.priority INTO v_level FROM jobs j WHERE j.status = 'pending' AND j.priority > v_level
            ORDER BY j.priority LIMIT 1;
        ELSE
            SELECT j.priority INTO v_level FROM jobs j WHERE j.status = 'pending' AND j.type = p_type
              AND j.priority > v_level ORDER BY j.priority LIMIT 1;
        END IF;
    END LOOP;

    IF cardinality(c_id) = 0 THEN
        RETURN;
    END IF;

    -- 7. the stores served: their wait restarts now, and the order they were served in breaks ties next time
    WITH claimed AS (
        SELECT u.store, row_number() OVER (ORDER BY u.prio, u.round, u.rank) AS pos
        FROM unnest(c_store, c_prio, c_round, c_rank) AS u(store, prio, round, rank)
    ), served AS (
        SELECT c.store, max(c.pos)::integer AS pos FROM claimed c GROUP BY c.store
    ), mine AS (
        SELECT t.store_key FROM job_store_turns t JOIN served s ON s.store = t.store_key
        ORDER BY t.store_key
        FOR UPDATE OF t SKIP LOCKED
    ), refreshed AS (
        UPDATE job_store_turns t SET served_at = now(), served_pos = s.pos
        FROM mine m JOIN served s ON s.store = m.store_key
        WHERE t.store_key = m.store_key
    )
    INSERT INTO job_store_turns (store_key, served_at, served_pos)
    SELECT s.store, now(), s.pos FROM served s
    WHERE NOT EXISTS (SELECT 1 FROM job_store_turns t WHERE t.store_key = s.store)
      AND pg_try_advisory_xact_lock(20223, hashtext(s.store))
    ORDER BY s.store
    ON CONFLICT (store_key) DO NOTHING;

    RETURN QUERY
        SELECT u.id, (row_number() OVER (ORDER BY u.prio, u.round, u.rank))::integer
        FROM unnest(c_id, c_prio, c_round, c_rank) AS u(id, prio, round, rank);
END
$fn$;

RESET lock_timeout;
RESET statement_timeout;
