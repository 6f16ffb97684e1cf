-- Fair claiming across stores, v3: jobs_fair_claim(p_limit, p_types, p_max_per_store, p_skip), the `due` step of
-- the claim statement (jobprocessor/queries.py: it rescues expired leases, calls this, and updates what this
-- returns to `running` in the same statement). Applied by Alembic revision 0012_fair_claim_v3 (after
-- sql/025_job_store_queues_v2.sql, the directory it reads) and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/026_fair_claim_v3.sql
-- Idempotent (CREATE OR REPLACE; types and the old signature's replacement in DO blocks). Locks: none on jobs or
-- on the directory (it creates functions and types, and drops v1's helpers). Never edit this file once
-- released: add a _v4 file instead. It replaces sql/022 and sql/024 entirely: nothing here refers to them.
--
-- THE RULE. jobprocessor/policies/fairness.py (allocate()) is the executable specification; this function takes
-- the same jobs in the same order, and tests/test_fair_claim.py compares the two job for job on random queues. In
-- short: only due jobs of the wanted types (p_types; NULL: every type) count; priority is global (a level gets
-- slots only once every due job of the levels above has one); within a level the slots are shared max-min fairly
-- among the stores in rounds (round r holds the r-th job of every store that has one; the last, partial round
-- goes to the stores that have waited longest -- since their oldest wanted due job became due or since they were
-- last served, whichever is later; then the one whose last job stood earlier in its last claim, then the older
-- head, then the store key); within a store: run_at, id; p_max_per_store caps one store's jobs in the call. It
-- returns the jobs locked, with their place in the claim order (level, round, rank). p_skip: the jobs the calling
-- statement rescued a moment ago (this function would see them pending, and the statement's UPDATE cannot change
-- a row twice): they wait for the next call.
--
-- THE PHASES (marked in the function below):
--   1. merge arrivals   job_store_arrivals_merge() (sql/025): jobs that became pending with no row to hold them
--                       join the directory. The stores of the arrivals it cannot merge yet are read beside the
--                       directory (3.), so a transaction still open never hides another one's committed job.
--   2. levels           the next priority level with a directory row that may hold a due job (one index descent
--                       of job_store_queues_wait_idx), or an arrival left.
--   3. read the directory  rows of the level in wait_from order (a lower bound of each store's wait, for any
--                       types), a chunk at a time (3a); each store's real head (its oldest wanted pending job: one
--                       probe) gives its real rank (3b); a store whose rank is below the order key of the last row
--                       read ranks before every row not read yet, so it is "placed", in rank order (3c); the others
--                       wait in a pool for the next chunk. About one probe per slot, whatever the number of stores.
--                       A claim of one type whose jobs come late in the stores (their oldest jobs being of other
--                       types) would place few stores per chunk that way: it reads the level in order of the
--                       directory's bound for that type instead (3a'), which costs one entry per row of the level.
--   4. whole rounds     with every store of the level known and at least one slot per live store: each takes
--                       floor(slots / live stores) jobs in one locked read (fewer if it runs dry or hits its cap,
--                       and then it drops out); repeated until fewer slots than live stores are left.
--   5. partial round    one job per store in rank order until the slots are gone, reading more of the directory
--                       when the stores placed so far are used up. A store's first job at the level is its head,
--                       locked by primary key. A store whose head another caller holds is being served by that
--                       caller: it gets its job only after the stores nobody is serving (so concurrent callers
--                       spread over the stores instead of all serving the same ones).
--   6. turns            the stores served get their turn (job_store_queues_serve()), which moves them behind the
--                       stores still waiting; rows found with nothing due are tightened (job_store_queues_tighten()),
--                       so stores that ran dry drop out of the reads until they enqueue again.
-- Where tenant flow control (issue 11, part 2) plugs in, each marked "flow control" below: which types a claim may
-- take at all (paused types: out of `wanted` before 1.); which stores may run now and how much (paused stores and
-- store/type pairs, max_running from live leases, starts per minute: the store's `allowance` and `via_types` when
-- it is placed in 3c, 0 = not placed); weights (the share each live store is owed in 4., and the order of 5.).
--
-- TYPES. The directory knows, per (store, priority), a superset of the types it covers, each with a lower bound of
-- its oldest pending job (sql/025). A row that holds none of the wanted types is passed over unprobed. A store whose
-- every type is wanted is read as an untyped claim reads it (jobs_fair_idx: one descent for its head, one range
-- read per round). A store that also holds other types is read by type (jobs_fair_type_idx: its wanted types' heads
-- and next jobs, so its unwanted jobs are never walked), except that a claim of several types finds such a store's
-- head among its next 8 jobs in jobs_fair_idx when it can (usually the first or second). So a claim for the types a
-- process has handlers for -- usually a superset of the queue's -- costs what an untyped claim costs; a claim that
-- leaves some queued types out costs a few more probes; rows holding only unwanted types cost about a microsecond
-- each when they are read (they are, while they wait longer than the stores served). Measured in docs/BENCHMARKS.md.
--
-- LOCKS (every statement that touches job_store_queues, job_store_arrivals or jobs in the claim's path; "waits"
-- is what it can wait for. Row-lock conflicts that matter: FOR UPDATE conflicts with every other row lock; FOR NO
-- KEY UPDATE with itself and FOR UPDATE; FOR KEY SHARE only with FOR UPDATE.)
--
-- | statement (where)                                   | rows                        | lock, held until its transaction ends | waits for |
-- |-----------------------------------------------------|-----------------------------|----------------------------------------|-----------|
-- | enqueue/retry/release trigger: hold (025, cover 1.) | the row covering the job    | FOR KEY SHARE SKIP LOCKED              | nothing; except a row whose newest version is an uncommitted tightening (6.): waits for that claim (PostgreSQL follows the update chain) |
-- | trigger: widen (025, cover 2.)                      | a row that must cover more  | FOR NO KEY UPDATE SKIP LOCKED + UPDATE | nothing |
-- | trigger: create (025, cover 3.)                     | a store's new row           | try-lock 20224 on its key + INSERT     | nothing |
-- | trigger: arrival (025, cover 4.)                    | job_store_arrivals          | INSERT                                 | nothing |
-- | 1. merge arrivals (025)                             | arrivals, oldest 10,000     | FOR UPDATE SKIP LOCKED + DELETE        | nothing |
-- |                                                     | their rows                  | as widen / create                      | nothing |
-- | 2. levels, 3. read the directory, arrival stores     | directory rows, store heads | none (reads)                           | nothing |
-- | 4./5. the locked read: heads                        | jobs, by primary key        | FOR UPDATE SKIP LOCKED                 | nothing |
-- | 4./5. the locked read: per-store reads              | jobs, next n of each store  | FOR UPDATE SKIP LOCKED (a store read by type may lock up to n per wanted type; the surplus stays locked until commit) | nothing |
-- | 6. tighten (025)                                    | rows that would change      | FOR UPDATE SKIP LOCKED + UPDATE        | nothing |
-- | 6. turns (025, serve)                               | every row of a served store | FOR NO KEY UPDATE SKIP LOCKED + UPDATE | nothing |
-- | claim statement: rescue, UPDATE to running (queries.py) | expired leases; the jobs locked here | FOR UPDATE SKIP LOCKED; own locks | nothing; the rescue's trigger as "hold" |
--
-- So a claim waits for nothing (SKIP LOCKED everywhere, try-locks for new keys); an enqueue or a finish waits at
-- most for the rest of one claim statement, in the one case above.
--
-- CONSTANTS. A chunk of the directory is as many rows (that may hold a wanted type) as stores are still needed --
-- one more than the slots left, at first -- + 8, plus the candidates read and not placed yet: a few rows of stores
-- with nothing due, or not certain yet to rank first, do not force a second read (v2 measured 108 rows read for
-- 100 slots at 1,000 stores), and a level that places few of the stores it reads is read in chunks that grow. A head among a store's next 8 jobs: a claim of several types looks no further before probing type by
-- type. The merge takes at most 10,000 arrivals (sql/025). Advisory-lock class 20224 is the directory's "creating
-- this row" try-lock (sql/025); 20223 was v1's, gone with its table of turns.
--
-- PLANS. The function's statements are planned once per session (plan_cache_mode = force_generic_plan): their
-- custom plans cost more to make than to run, and their best plan does not depend on the values. The planner is
-- told not to sort what an index can give in order, and not to scan the directory sequentially or by bitmap
-- (enable_sort, enable_seqscan, enable_bitmapscan off): the directory is small but rewritten by every claim, its
-- statistics lag, a sequential scan would read every dead version left since the last vacuum, and the generic
-- estimates (a type filter, a keyset cursor) would otherwise prefer reading a whole level and sorting it to
-- reading the first rows of job_store_queues_wait_idx in order. The directory's writes (sql/025) may sort.

SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- A store's queue at the level being shared out: how to read it, its rank, and what this claim took from it. (The
-- stores read but not placed yet, and a chunk of rows being read, have the same shape.)
DO $$
BEGIN
    IF to_regtype('jobs_fair_queue') IS NULL THEN
        CREATE TYPE jobs_fair_queue AS (
            store_key text,         -- the store ('' for jobs without one)
            via_types text[],       -- how its jobs are read: NULL through jobs_fair_idx (it holds wanted types
                                    -- only, or every type is wanted), else by type: the types it may hold,
                                    -- one read per one of them that is wanted
            turn_at   timestamptz,  -- its turn: when it was last served
            rank_wait timestamptz,  -- its rank: (rank_wait, rank_pos, head_run, store_key), where rank_wait is how
            rank_pos  integer,      -- long it has waited, greatest(head_run, turn_at), rank_pos where its last job
            head_run  timestamptz,  -- stood in its last claim, head_run/head_id its head -- its oldest wanted
            head_id   bigint,       -- pending job at the level, when read
            after_run timestamptz,  -- cursor: the last job taken from it ('-infinity', 0: none yet)
            after_id  bigint,
            taken     integer,      -- jobs taken from it at this level: the round it is in
            owed      integer,      -- jobs the current step asked of it and it has not given yet
            allowance integer,      -- jobs it may still take in this claim (p_max_per_store; else p_limit)
            live      boolean       -- may give more: has not run dry, has allowance left
        );
    END IF;
END
$$;

-- One store's part of a locked read: `take` jobs after the cursor (and its head first, by primary key).
DO $$
BEGIN
    IF to_regtype('jobs_fair_ask') IS NULL THEN
        CREATE TYPE jobs_fair_ask AS (
            rank      integer,      -- the queue it is for (its index in the level's rank order)
            store_key text,
            via_types text[],
            after_run timestamptz,
            after_id  bigint,
            take      integer,
            head_id   bigint        -- lock this job by primary key first (NULL: read from the cursor)
        );
    END IF;
END
$$;

-- A store's head at a level: its oldest pending job of the wanted types (due or not), excluding p_skip. Read
-- without a lock. When every type the store holds is wanted (p_via NULL): its first entry in jobs_fair_idx, one
-- descent. When it holds others too (p_via: the types it may hold): for one wanted type, its first entry in
-- jobs_fair_type_idx; for several, the first wanted one among its next 8 jobs in jobs_fair_idx (usually the first
-- or second), else one descent of jobs_fair_type_idx per wanted type it may hold (so a store whose queue starts
-- with a long run of unwanted jobs is not walked). Each branch's condition is checked once, before its scan
-- starts: the branches not taken cost nothing. A SQL function the planner inlines into the query that calls it.
CREATE OR REPLACE FUNCTION jobs_fair_head(p_level smallint, p_store text, p_via text[], p_wanted text[],
                                          p_skip bigint[])
RETURNS TABLE (head_run timestamptz, head_id bigint)
LANGUAGE sql STABLE
AS $fn$
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
$fn$;

-- (PLANS, at the top, says why the planner settings.)
CREATE OR REPLACE FUNCTION jobs_fair_claim(p_limit integer, p_types text[] DEFAULT NULL,
                                           p_max_per_store integer DEFAULT NULL, p_skip bigint[] DEFAULT '{}')
RETURNS TABLE (job_id bigint, claim_order integer)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
AS $fn$
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
$fn$;

-- The previous signature (p_type text), for processes still running the previous release during a deploy: one
-- type is a set of one. Without defaults, so a call with fewer arguments is v3's. Drop it in the next version.
DO $$
BEGIN
    DROP FUNCTION IF EXISTS jobs_fair_claim(integer, text, integer, bigint[]);
    CREATE FUNCTION jobs_fair_claim(p_limit integer, p_type text, p_max_per_store integer, p_skip bigint[])
    RETURNS TABLE (job_id bigint, claim_order integer)
    LANGUAGE sql VOLATILE
    AS $fn$
        SELECT f.job_id, f.claim_order
        FROM jobs_fair_claim(p_limit, CASE WHEN p_type IS NOT NULL THEN ARRAY[p_type] END, p_max_per_store,
                             p_skip) AS f
    $fn$;
END
$$;

-- v1's per-store probe (sql/022) and v1's directory writes (sql/023, kept by sql/025 for v2 until now): nothing
-- calls them any more.
DROP FUNCTION IF EXISTS jobs_fair_claim_probe(smallint, text, bigint[], integer[], text[], timestamptz[], bigint[],
                                              integer[]);
DROP FUNCTION IF EXISTS job_store_queues_lower(smallint[], text[], timestamptz[]);
DROP FUNCTION IF EXISTS job_store_queues_add(smallint[], text[], timestamptz[]);

RESET lock_timeout;
RESET statement_timeout;
