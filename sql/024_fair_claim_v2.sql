-- Fair claiming across stores, v2: jobs_fair_claim() reads the directory of store queues (sql/023) instead of
-- probing every store with a pending job. Applied by Alembic revision 0007_store_queues (after 023) and runnable
-- by hand:  psql -v ON_ERROR_STOP=1 -f sql/024_fair_claim_v2.sql
-- Idempotent (CREATE OR REPLACE). Locks: none on jobs. Never edit this file once released: add a _v3 file instead.
--
-- The rule is v1's (sql/022_fair_claim_v1.sql has it in full, jobprocessor/policies/fairness.py is the same rule in
-- Python, and the tests hold the two together): global priority; max-min fair water-filling within a level, in
-- rounds; in the partial round the stores that have waited longest -- greatest(oldest due job's run_at, last turn)
-- -- go first; within a store priority, run_at, id; p_max_per_store caps one store per call. One change: the last
-- tie-break between stores is the store key, not the head job's id (the directory's index orders by it, so stores
-- tied on their wait are placed from the rows read instead of after reading every tied store).
-- jobs_fair_claim_probe() (the per-store locked reads) is v1's.
--
-- What changed, and why: v1 found a level's stores with a loose index scan, one probe per store waiting at the
-- level -- about 10 ms at 1,000 stores here, the whole cost of fairness. v2 reads the level's rows of
-- job_store_queues in order of their lower bound on the wait (wait_from) and probes only those stores' heads:
--   0. First the arrivals (sql/023) are merged into the directory: rows lowered or created, SKIP LOCKED. The
--      stores of arrivals that cannot be merged yet (their row is being lowered or created by a transaction still
--      open) are read beside the directory's rows at their level, so an open transaction never hides another's
--      committed job.
--   1. The levels come from the directory too (a skip scan of its wait index), not from jobs_claim_idx, whose first
--      entries can be thousands of dead ones after a burst of claims and before VACUUM. Every read of the
--      directory takes clock_timestamp() as its horizon (rows with wait_from after it are not read): a store served
--      by a caller that committed meanwhile is still read, and ranks as just served.
--   2. Candidates, chunk by chunk (as many rows as slots, plus 8). Each store's real wait comes from its
--      head (one probe, not locked) and its turn row; a store whose real wait is below the lower bound of the last
--      row read ranks before every store not read yet, so it is placed in rank order; the others wait in a pool
--      for the next chunk. Reading stops once more stores are placed than there are slots (or the level has no
--      more rows): about 1.3 probes per slot, whatever the number of stores. With fewer stores than slots every
--      store is read, as in v1, and the rounds are computed over all of them.
--   3. Water-filling as in v1, except that whole rounds are only dealt once every due store of the level is known,
--      and a partial round that runs past the stores placed so far reads the next chunk and goes on in rank order.
--   4. In a partial round, a store's first job at the level is its head, read in 2.: it is locked by primary key
--      (one index scan for the batch, `FOR UPDATE SKIP LOCKED`, every condition rechecked), and only the stores
--      whose head is gone or locked by another caller go through v1's per-store probe (and, as in v1 note 5, wait
--      behind the stores nobody is serving).
--   8. A row whose store turned out to have no due job at the level (its jobs were claimed, cancelled, or lie in
--      the future) is tightened: locked FOR UPDATE SKIP LOCKED (skipped while an enqueue of that store is in
--      flight), then, in a later statement that sees every enqueue committed before the lock, head_lb is set to
--      the store's real oldest pending run_at, or 'infinity'. So a store that ran dry drops out of the candidates
--      until it enqueues again (its enqueue lowers the row), and idle stores cost nothing.
--   7. The stores served get their turn, served_at = now() and served_pos, on all their rows (the directory holds
--      the turns: v1's job_store_turns is dropped below), which moves them behind the stores still waiting. One
--      write per store served, where v1 wrote a turn row and v2 would otherwise write a directory row too.
-- A `type` filter keeps v1's loose index scan over jobs_fair_type_idx: it visits only the stores with a pending job
-- of that type, which the directory (per priority and store, any type) cannot tell.

SET lock_timeout = '10s';
SET statement_timeout = '60s';

CREATE OR REPLACE FUNCTION jobs_fair_claim(p_limit integer, p_type text DEFAULT NULL,
                                           p_max_per_store integer DEFAULT NULL, p_skip bigint[] DEFAULT '{}')
RETURNS TABLE (job_id bigint, claim_order integer)
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_left    integer := p_limit;  -- slots still free
    v_level   smallint;            -- the priority level being shared out
    v_n       integer;             -- queues placed at the level (one per store with a due job)
    v_active  integer;             -- of which may still take a job (q_live)
    v_share   integer;
    v_pos     integer;             -- in a partial round: the next queue to ask (0: not in a partial round)
    v_q       integer;
    v_horizon timestamptz;         -- read just before each read of the directory: every turn committed by then is
                                   -- at or before it (a caller's served_at is its now(), before its commit)
    r         record;
    -- reading the directory (2.)
    v_more    boolean;             -- the level may have rows not read yet
    v_chunk   integer;
    v_bound   timestamptz;         -- lower bound of the wait of every row not read yet
    v_after_w timestamptz;         -- keyset cursor: the last row read
    v_after_s text;
    v_after_p integer;
    v_after_h timestamptz;
    v_bound_p integer;             -- with v_bound: the whole order key of the last row read, (wait_from, served_pos,
    v_bound_h timestamptz;         -- head_lb, store_key), a lower bound of (wait, turn position, head run_at, store)
    v_bound_s text;                -- of every row not read yet
    ch_lb     timestamptz[];
    a_id      bigint[];            -- 0. the arrivals this claim locked
    a_store   text[];
    a_prio    smallint[];
    a_run     timestamptz[];
    pr_store  text[];              -- their (store, priority) pairs, each with its earliest run_at
    pr_prio   smallint[];
    pr_run    timestamptz[];
    dn_store  text[];              -- the pairs lowered or created: their arrivals are deleted
    dn_prio   smallint[];
    m_store   text[];              -- rows lowered by 0. in this claim: not tightened by 8. in the same claim (a
    m_prio    smallint[];          -- transaction holding an older version FOR KEY SHARE would wait for it)
    u_store   text[];              -- arrivals left after 0. (their row or its key is another transaction's now):
    u_prio    smallint[];          -- their stores are read at their level beside the directory's rows
    v_read    text[];              -- the stores read at the level: a row a concurrent claim has just served moves
                                   -- behind the cursor's position and would come round again
    ch_store  text[];
    ch_wait   timestamptz[];
    ch_key    timestamptz[];       -- the store's real wait: greatest(head run_at, last turn); NULL: nothing due
    ch_pos    integer[];
    ch_hrun   timestamptz[];
    ch_hid    bigint[];
    -- read but not placed yet: may rank after a row not read yet
    p_store   text[];
    p_key     timestamptz[];
    p_pos     integer[];
    p_hrun    timestamptz[];
    p_hid     bigint[];
    n_store   text[];              -- placed by this read, in rank order
    n_hid     bigint[];
    n_allow   integer[];
    -- rows found with no due job, to tighten (8.)
    s_prio    smallint[] := '{}';
    s_store   text[] := '{}';
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
    -- partial round: the heads asked for by primary key, and the jobs given (heads, then probed)
    h_i       integer[];
    h_id      bigint[];
    g_i       integer[];
    g_id      bigint[];
    g_run     timestamptz[];
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

    -- 0. the arrivals (sql/023): jobs that became pending with no row holding them. Lower (or create) their rows,
    -- then delete them; an arrival whose row another claim is writing (SKIP LOCKED), or whose new row another claim
    -- is creating (the try-lock), stays for the next claim. Bounded, so a backlog of arrivals is merged over a few
    -- calls. Nothing here waits.
    SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.store_key), '{}'),
           coalesce(array_agg(x.priority), '{}'), coalesce(array_agg(x.run_at), '{}')
    INTO a_id, a_store, a_prio, a_run
    FROM (SELECT ar.id, ar.store_key, ar.priority, ar.run_at
          FROM job_store_arrivals ar
          ORDER BY ar.id
          LIMIT 10000
          FOR UPDATE OF ar SKIP LOCKED) x;
    m_store := '{}'; m_prio := '{}';
    IF cardinality(a_id) > 0 THEN
        -- one element per (store, priority), its earliest run_at: lowered, or created (sql/023's helpers)
        SELECT array_agg(g.store_key), array_agg(g.priority), array_agg(g.run_at)
        INTO pr_store, pr_prio, pr_run
        FROM (SELECT u.store_key, u.priority, min(u.run_at) AS run_at
              FROM unnest(a_store, a_prio, a_run) AS u(store_key, priority, run_at)
              GROUP BY u.store_key, u.priority) g;
        SELECT coalesce(array_agg(l.store_key), '{}'), coalesce(array_agg(l.priority), '{}')
        INTO m_store, m_prio
        FROM job_store_queues_lower(pr_prio, pr_store, pr_run) AS l;
        SELECT m_store || coalesce(array_agg(n.store_key), '{}'), m_prio || coalesce(array_agg(n.priority), '{}')
        INTO dn_store, dn_prio
        FROM job_store_queues_add(pr_prio, pr_store, pr_run) AS n;
        DELETE FROM job_store_arrivals x
        USING unnest(a_id, a_store, a_prio) AS a(id, store_key, priority)
        WHERE x.id = a.id
          AND EXISTS (SELECT 1 FROM unnest(dn_store, dn_prio) AS h(store_key, priority)
                      WHERE h.store_key = a.store_key AND h.priority = a.priority);
    END IF;
    SELECT coalesce(array_agg(x.store_key), '{}'), coalesce(array_agg(x.priority), '{}')
    INTO u_store, u_prio
    FROM (SELECT DISTINCT ar.store_key, ar.priority FROM job_store_arrivals ar) x;
    -- 1. the first level with a store that may have a due job: from the directory (a skip scan of its wait index,
    -- one descent per priority level at most), not from jobs_claim_idx, whose first entries can be thousands of
    -- dead ones right after a burst of claims and before VACUUM; a level whose rows all turn out to have nothing due
    -- costs one chunk, and its rows are tightened (8.)
    IF p_type IS NULL THEN
        v_horizon := clock_timestamp();
        SELECT least((SELECT q.priority FROM job_store_queues q WHERE q.wait_from <= v_horizon
                      ORDER BY q.priority LIMIT 1),
                     (SELECT min(u.priority) FROM unnest(u_prio) AS u(priority)))
        INTO v_level;
    ELSE
        SELECT j.priority INTO v_level FROM jobs j WHERE j.status = 'pending' AND j.type = p_type
        ORDER BY j.priority LIMIT 1;
    END IF;

    WHILE v_level IS NOT NULL AND v_left > 0 LOOP
        q_store := '{}'; q_head := '{}'; q_run := '{}'; q_id := '{}'; q_taken := '{}'; q_allow := '{}';
        q_live := '{}'; q_owed := '{}';
        v_n := 0; v_active := 0; v_pos := 0;
        v_more := false;
        IF p_type IS NULL THEN
            v_more := true;
            v_after_w := '-infinity'; v_after_p := -2147483648; v_after_h := '-infinity'; v_after_s := '';
            -- the stores of the arrivals left at this level: into the pool (placed by rank with the first chunk),
            -- and never read again from the directory at this level
            SELECT coalesce(array_agg(e.store_key), '{}'), coalesce(array_agg(greatest(h.run_at, o.served_at)), '{}'),
                   coalesce(array_agg(coalesce(o.served_pos, 0)), '{}'), coalesce(array_agg(h.run_at), '{}'),
                   coalesce(array_agg(h.id), '{}')
            INTO p_store, p_key, p_pos, p_hrun, p_hid
            FROM (SELECT DISTINCT u.store_key FROM unnest(u_store, u_prio) AS u(store_key, priority)
                  WHERE u.priority = v_level) e
            LEFT JOIN job_store_queues o ON o.store_key = e.store_key AND o.priority = v_level
            JOIN LATERAL (
                SELECT j.run_at, j.id
                FROM jobs j
                WHERE j.status = 'pending' AND j.priority = v_level AND coalesce(j.store_id, '') = e.store_key
                  AND j.id <> ALL (p_skip)
                ORDER BY j.run_at, j.id
                LIMIT 1) h ON true
            WHERE h.run_at <= now();
            v_read := p_store;
        ELSE
            -- typed: v1's loose index scan over jobs_fair_type_idx (only the stores with a job of the type)
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
            SELECT coalesce(array_agg(o.store ORDER BY o.rk), '{}'), coalesce(array_agg(o.id ORDER BY o.rk), '{}'),
                   coalesce(array_agg(o.allow ORDER BY o.rk), '{}')
            INTO n_store, n_hid, n_allow
            FROM (SELECT h.store, h.id,
                         row_number() OVER (ORDER BY greatest(h.run_at, t.served_at), coalesce(t.served_pos, 0),
                                            h.run_at, h.store) AS rk,
                         least(p_limit, coalesce(p_max_per_store - (SELECT count(*)::integer
                                                                      FROM unnest(c_store) AS u(store)
                                                                      WHERE u.store = h.store), p_limit)) AS allow
                  FROM heads h
                  LEFT JOIN job_store_queues t ON t.store_key = h.store AND t.priority = v_level
                  WHERE h.run_at <= now()) o;
            FOR k IN 1 .. cardinality(n_store) LOOP
                v_n := v_n + 1;
                q_store[v_n] := n_store[k]; q_head[v_n] := n_hid[k];
                q_run[v_n] := '-infinity'; q_id[v_n] := 0; q_taken[v_n] := 0; q_owed[v_n] := 0;
                q_allow[v_n] := n_allow[k];
                q_live[v_n] := n_allow[k] > 0;
                IF q_live[v_n] THEN
                    v_active := v_active + 1;
                END IF;
            END LOOP;
        END IF;

        LOOP
            EXIT WHEN v_left <= 0;

            -- 2. read the next chunk of the level's stores: before whole rounds are dealt (they need every store),
            -- and when a partial round has asked every store placed so far
            IF v_more AND ((v_pos = 0 AND v_active <= v_left) OR v_pos > v_n) THEN
                v_chunk := v_left + 8;
                v_horizon := clock_timestamp();
                SELECT coalesce(array_agg(d.store_key ORDER BY d.rn), '{}'),
                       coalesce(array_agg(d.wait_from ORDER BY d.rn), '{}'),
                       coalesce(array_agg(CASE WHEN h.run_at <= now() THEN greatest(h.run_at, d.served_at) END
                                          ORDER BY d.rn), '{}'),
                       coalesce(array_agg(d.served_pos ORDER BY d.rn), '{}'),
                       coalesce(array_agg(h.run_at ORDER BY d.rn), '{}'),
                       coalesce(array_agg(h.id ORDER BY d.rn), '{}'),
                       coalesce(array_agg(d.head_lb ORDER BY d.rn), '{}')
                INTO ch_store, ch_wait, ch_key, ch_pos, ch_hrun, ch_hid, ch_lb
                FROM (SELECT q.store_key, q.wait_from, q.served_at, q.served_pos, q.head_lb,
                             row_number() OVER (ORDER BY q.wait_from, q.served_pos, q.head_lb, q.store_key) AS rn
                      FROM (SELECT q.store_key, q.wait_from, q.served_at, q.served_pos, q.head_lb
                            FROM job_store_queues q
                            WHERE q.priority = v_level AND q.wait_from <= v_horizon
                              AND (q.wait_from, q.served_pos, q.head_lb, q.store_key)
                                  > (v_after_w, v_after_p, v_after_h, v_after_s)
                              AND q.store_key <> ALL (v_read)
                            ORDER BY q.wait_from, q.served_pos, q.head_lb, q.store_key
                            LIMIT v_chunk) q) d
                LEFT JOIN LATERAL (
                    SELECT j.run_at, j.id
                    FROM jobs j
                    WHERE j.status = 'pending' AND j.priority = v_level AND coalesce(j.store_id, '') = d.store_key
                      AND j.id <> ALL (p_skip)
                    ORDER BY j.run_at, j.id
                    LIMIT 1) h ON true;

                v_read := v_read || ch_store;
                IF cardinality(ch_store) < v_chunk THEN
                    v_more := false;
                    v_bound := 'infinity'; v_bound_p := 0; v_bound_h := 'infinity'; v_bound_s := '';
                ELSE
                    v_after_w := ch_wait[cardinality(ch_store)]; v_after_p := ch_pos[cardinality(ch_store)];
                    v_after_h := ch_lb[cardinality(ch_store)]; v_after_s := ch_store[cardinality(ch_store)];
                    v_bound := v_after_w; v_bound_p := v_after_p; v_bound_h := v_after_h; v_bound_s := v_after_s;
                END IF;
                FOR k IN 1 .. cardinality(ch_store) LOOP
                    IF ch_key[k] IS NULL THEN  -- 8. nothing due at the level: tightened at the end
                        s_prio := s_prio || v_level; s_store := s_store || ch_store[k];
                    ELSE
                        p_store := p_store || ch_store[k]; p_key := p_key || ch_key[k]; p_pos := p_pos || ch_pos[k];
                        p_hrun := p_hrun || ch_hrun[k]; p_hid := p_hid || ch_hid[k];
                    END IF;
                END LOOP;
                -- place the stores certain to rank before every row not read yet, in rank order
                SELECT coalesce(array_agg(u.store ORDER BY u.key, u.pos, u.hrun, u.store), '{}'),
                       coalesce(array_agg(u.hid ORDER BY u.key, u.pos, u.hrun, u.store), '{}'),
                       coalesce(array_agg(least(p_limit, coalesce(p_max_per_store - (
                                              SELECT count(*)::integer FROM unnest(c_store) AS c(store)
                                              WHERE c.store = u.store), p_limit))
                                          ORDER BY u.key, u.pos, u.hrun, u.store), '{}')
                INTO n_store, n_hid, n_allow
                FROM unnest(p_store, p_key, p_pos, p_hrun, p_hid) AS u(store, key, pos, hrun, hid)
                WHERE (u.key, u.pos, u.hrun, u.store) < (v_bound, v_bound_p, v_bound_h, v_bound_s);
                IF cardinality(n_store) > 0 THEN
                    SELECT coalesce(array_agg(u.store), '{}'), coalesce(array_agg(u.key), '{}'),
                           coalesce(array_agg(u.pos), '{}'), coalesce(array_agg(u.hrun), '{}'),
                           coalesce(array_agg(u.hid), '{}')
                    INTO p_store, p_key, p_pos, p_hrun, p_hid
                    FROM unnest(p_store, p_key, p_pos, p_hrun, p_hid) AS u(store, key, pos, hrun, hid)
                    WHERE (u.key, u.pos, u.hrun, u.store) >= (v_bound, v_bound_p, v_bound_h, v_bound_s);
                END IF;
                FOR k IN 1 .. cardinality(n_store) LOOP
                    v_n := v_n + 1;
                    q_store[v_n] := n_store[k]; q_head[v_n] := n_hid[k];
                    q_run[v_n] := '-infinity'; q_id[v_n] := 0; q_taken[v_n] := 0; q_owed[v_n] := 0;
                    q_allow[v_n] := n_allow[k];
                    q_live[v_n] := n_allow[k] > 0;
                    IF q_live[v_n] THEN
                        v_active := v_active + 1;
                    END IF;
                END LOOP;
                CONTINUE;
            END IF;

            IF v_pos = 0 THEN
                EXIT WHEN v_active = 0;
                v_share := v_left / v_active;
                IF v_share >= 1 THEN
                    -- 3. whole rounds: every live queue is owed v_share more jobs (fewer under its cap)
                    b_i := '{}'; b_store := '{}'; b_run := '{}'; b_id := '{}'; b_take := '{}';
                    FOR i IN 1 .. v_n LOOP
                        IF q_live[i] THEN
                            q_owed[i] := least(v_share, q_allow[i]);
                            b_i := b_i || i; b_store := b_store || q_store[i]; b_run := b_run || q_run[i];
                            b_id := b_id || q_id[i]; b_take := b_take || q_owed[i];
                        END IF;
                    END LOOP;
                    FOR r IN SELECT * FROM jobs_fair_claim_probe(v_level, p_type, p_skip, b_i, b_store, b_run,
                                                                 b_id, b_take)
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
                -- the partial round (fewer slots than live queues): one job each, in rank order, until the slots
                -- are gone; asked in batches of as many queues as slots remain
                v_pos := 1;
                f_i := '{}'; f_id := '{}'; f_run := '{}';
            END IF;

            IF v_pos <= v_n THEN
                -- the next queues, as many as slots remain; a queue not served yet at this level is asked for its
                -- head (read with the level) by primary key, the others (and heads not obtained) through the probe
                b_i := '{}'; b_store := '{}'; b_run := '{}'; b_id := '{}'; b_take := '{}';
                h_i := '{}'; h_id := '{}';
                WHILE v_pos <= v_n AND cardinality(b_i) + cardinality(h_i) < v_left LOOP
                    IF q_live[v_pos] THEN
                        IF q_taken[v_pos] = 0 THEN
                            h_i := h_i || v_pos; h_id := h_id || q_head[v_pos];
                        ELSE
                            b_i := b_i || v_pos; b_store := b_store || q_store[v_pos];
                            b_run := b_run || q_run[v_pos]; b_id := b_id || q_id[v_pos]; b_take := b_take || 1;
                        END IF;
                        q_live[v_pos] := false;  -- until it is given a job
                        v_active := v_active - 1;
                    END IF;
                    v_pos := v_pos + 1;
                END LOOP;
                CONTINUE WHEN cardinality(b_i) + cardinality(h_i) = 0;
                -- 4. the heads: locked if still pending, due and not locked by another caller (the recheck of every
                -- condition on a row changed since the snapshot keeps a job claimed meanwhile out)
                SELECT coalesce(array_agg(x.i), '{}'), coalesce(array_agg(x.id), '{}'),
                       coalesce(array_agg(x.run_at), '{}')
                INTO g_i, g_id, g_run
                FROM (SELECT u.i, j.id, j.run_at
                      FROM unnest(h_i, h_id) AS u(i, id)
                      JOIN jobs j ON j.id = u.id
                      WHERE j.status = 'pending' AND j.run_at <= now() AND j.priority = v_level
                        AND (p_type IS NULL OR j.type = p_type)
                      FOR UPDATE OF j SKIP LOCKED) x;
                FOR k IN 1 .. cardinality(h_i) LOOP
                    IF NOT (h_i[k] = ANY (g_i)) THEN
                        b_i := b_i || h_i[k]; b_store := b_store || q_store[h_i[k]];
                        b_run := b_run || q_run[h_i[k]]; b_id := b_id || q_id[h_i[k]]; b_take := b_take || 1;
                    END IF;
                END LOOP;
                IF cardinality(b_i) > 0 THEN
                    SELECT g_i || coalesce(array_agg(x.i ORDER BY x.i, x.run_at, x.id), '{}'),
                           g_id || coalesce(array_agg(x.id ORDER BY x.i, x.run_at, x.id), '{}'),
                           g_run || coalesce(array_agg(x.run_at ORDER BY x.i, x.run_at, x.id), '{}')
                    INTO g_i, g_id, g_run
                    FROM jobs_fair_claim_probe(v_level, p_type, p_skip, b_i, b_store, b_run, b_id, b_take) AS x;
                END IF;
                FOR k IN 1 .. cardinality(g_i) LOOP
                    v_q := g_i[k];
                    IF q_taken[v_q] = 0 AND g_id[k] <> q_head[v_q] THEN
                        -- 5. another caller holds this store's oldest job: it is serving the store right now
                        f_i := f_i || v_q; f_id := f_id || g_id[k]; f_run := f_run || g_run[k];
                        q_live[v_q] := true;
                        v_active := v_active + 1;
                        CONTINUE;
                    END IF;
                    q_taken[v_q] := q_taken[v_q] + 1;
                    q_run[v_q] := g_run[k]; q_id[v_q] := g_id[k];
                    q_allow[v_q] := q_allow[v_q] - 1;
                    IF q_allow[v_q] > 0 THEN
                        q_live[v_q] := true;
                        v_active := v_active + 1;
                    END IF;
                    c_id := c_id || g_id[k]; c_store := c_store || q_store[v_q]; c_prio := c_prio || v_level;
                    c_round := c_round || q_taken[v_q]; c_rank := c_rank || v_q;
                    v_left := v_left - 1;
                END LOOP;
                CONTINUE;
            END IF;

            -- the partial round asked every store of the level: the stores deferred by 5., in rank order, if slots
            -- remain (a job found but not taken is unlocked when the claim commits)
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
            v_pos := 0;
        END LOOP;

        -- 1. the next level
        IF p_type IS NULL THEN
            v_horizon := clock_timestamp();
            SELECT least((SELECT q.priority FROM job_store_queues q WHERE q.priority > v_level
                            AND q.wait_from <= v_horizon ORDER BY q.priority LIMIT 1),
                         (SELECT min(u.priority) FROM unnest(u_prio) AS u(priority) WHERE u.priority > v_level))
            INTO v_level;
        ELSE
            SELECT j.priority INTO v_level FROM jobs j WHERE j.status = 'pending' AND j.type = p_type
              AND j.priority > v_level ORDER BY j.priority LIMIT 1;
        END IF;
    END LOOP;

    -- 8. rows whose store had no due job at their level: lock the ones no enqueue is touching (an enqueue in flight
    -- holds FOR KEY SHARE, which FOR UPDATE conflicts with), then, in the next statement -- a fresh snapshot, which
    -- sees every enqueue committed before the lock -- set head_lb to the store's real oldest pending run_at
    IF cardinality(s_store) > 0 THEN
        SELECT coalesce(array_agg(x.priority), '{}'), coalesce(array_agg(x.store_key), '{}')
        INTO s_prio, s_store
        FROM (SELECT q.priority, q.store_key
              FROM job_store_queues q
              JOIN unnest(s_prio, s_store) AS s(priority, store_key)
                ON q.priority = s.priority AND q.store_key = s.store_key
              WHERE NOT EXISTS (SELECT 1 FROM unnest(m_store, m_prio) AS m(store_key, priority)
                                WHERE m.store_key = q.store_key AND m.priority = q.priority)
              ORDER BY q.priority, q.store_key
              FOR UPDATE OF q SKIP LOCKED) x;
        UPDATE job_store_queues q
        SET head_lb = coalesce(h.run_at, 'infinity')
        FROM unnest(s_prio, s_store) AS s(priority, store_key)
        LEFT JOIN LATERAL (
            SELECT j.run_at
            FROM jobs j
            WHERE j.status = 'pending' AND j.priority = s.priority AND coalesce(j.store_id, '') = s.store_key
            ORDER BY j.run_at, j.id
            LIMIT 1) h ON true
        WHERE q.priority = s.priority AND q.store_key = s.store_key;
    END IF;

    IF cardinality(c_id) = 0 THEN
        RETURN;
    END IF;

    -- 7. the stores served: their wait restarts now, and the order they were served in breaks ties next time; on
    -- every row of the store (the turn is the store's, whatever the level). Rows another caller is writing are
    -- skipped (SKIP LOCKED): it writes about the same time, and a skipped row keeps an earlier turn, still a lower
    -- bound of the wait. An enqueue's FOR KEY SHARE does not block this.
    WITH claimed AS (
        SELECT u.store, row_number() OVER (ORDER BY u.prio, u.round, u.rank) AS pos
        FROM unnest(c_store, c_prio, c_round, c_rank) AS u(store, prio, round, rank)
    ), served AS (
        SELECT c.store, max(c.pos)::integer AS pos FROM claimed c GROUP BY c.store
    ), mine AS (
        SELECT q.store_key, q.priority, s.pos
        FROM job_store_queues q JOIN served s ON s.store = q.store_key
        ORDER BY q.store_key, q.priority
        FOR NO KEY UPDATE OF q SKIP LOCKED
    )
    UPDATE job_store_queues q SET served_at = greatest(q.served_at, now()), served_pos = m.pos
    FROM mine m
    WHERE q.store_key = m.store_key AND q.priority = m.priority;

    RETURN QUERY
        SELECT u.id, (row_number() OVER (ORDER BY u.prio, u.round, u.rank))::integer
        FROM unnest(c_id, c_prio, c_round, c_rank) AS u(id, prio, round, rank);
END
$fn$;

-- v1's table of turns: the directory holds them now (sql/023 copied them over).
DROP TABLE IF EXISTS job_store_turns;

RESET lock_timeout;
RESET statement_timeout;
