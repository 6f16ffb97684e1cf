-- The directory of store queues, v2: it learns the job types, so a claim restricted to some types (a process
-- claims only the types it has handlers for; `?type=`) reads it as cheaply as an unrestricted one. The claim that
-- reads it is jobs_fair_claim() v3 (sql/026_fair_claim_v3.sql, which also has the table of every statement's
-- locks). Applied by Alembic revision 0012_fair_claim_v3 (statement by statement, each its own transaction) and
-- runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/025_job_store_queues_v2.sql        (without -1 / --single-transaction: the
--                                                                      fill at the end commits batch by batch)
-- Idempotent (ADD COLUMN IF NOT EXISTS, CREATE OR REPLACE, DROP ... IF EXISTS, a fill of what is still unknown).
-- Locks: the two ADD COLUMNs take ACCESS EXCLUSIVE on job_store_queues / job_store_arrivals for an instant (no
-- rewrite: a NULL column; enqueues and claims wait that long); CREATE OR REPLACE TRIGGER takes SHARE ROW EXCLUSIVE
-- on jobs for an instant (writes to jobs wait that long, reads do not); the fill locks directory rows only, SKIP
-- LOCKED, a batch at a time. Never edit this file once released: add a _v3 file instead.
-- v1 (sql/023_job_store_queues_v1.sql) made the table, its index and the arrivals; this file says everything the
-- directory promises now, so v1's prose is superseded by the text below.
--
-- WHAT A ROW SAYS. One row per (store, priority) that has had a pending job (store_key '' for jobs without a
-- store):
--   head_lb     a lower bound of the run_at of every pending job of the store at that priority that the row
--               covers ('infinity': none);
--   types,      new in v2: a superset of the types of those jobs (sorted), and for each of them a lower bound of
--   type_heads  the run_at of its pending jobs (type_heads[i] for types[i]; each >= head_lb). NULL, both: not
--               known -- a row made before v2, until the fill below or a claim has computed them; it covers every
--               type then, as a v1 row did. They let a claim for some types skip a store that has none of them
--               without probing it, and bound each store's wait for those types as tightly as head_lb does for all;
--   served_at,  the store's turn: when a claim last served it, and where its last job stood in that claim's order
--   served_pos  (the tie-break); the same on every row of the store;
--   wait_from   greatest(head_lb, served_at), generated: a lower bound of how long the store has waited at that
--               priority, for any set of types. The claim reads rows in wait_from order
--               (job_store_queues_wait_idx) and stops after about as many stores as it has slots.
-- A row "covers" a job when head_lb <= its run_at and, unless types is NULL, its type is in types with a type head
-- <= its run_at (job_store_queues_covers()).
--
-- THE INVARIANT: every pending job is covered by its (store, priority) row, or by an arrival (a row of
-- job_store_arrivals with the job's store, priority and type and a run_at at or before the job's) that no claim
-- has merged yet. Who keeps it, without anybody ever waiting for a directory row:
--   * every way a job becomes pending (INSERT; UPDATE to pending: a retry, a release, a rescue, a manual retry; an
--     UPDATE moving a pending job earlier or to another store, priority or type) runs a trigger that, in the job's
--     transaction and until it ends, does the first of these it can do without waiting:
--       1. hold the row that covers the job, FOR KEY SHARE (SKIP LOCKED): no claim can tighten it meanwhile;
--       2. widen the row (head_lb and the type's head lowered to the job's run_at, the type added if new), FOR NO
--          KEY UPDATE (SKIP LOCKED): the update's lock is held until the transaction ends;
--       3. create the store's first row at that priority, under the try-lock of its key (below);
--       4. record an arrival: a plain INSERT into job_store_arrivals, which has no unique key, cannot wait.
--     (job_store_queues_cover() does 1-4; the INSERT trigger does 1 itself, in one statement, and calls cover()
--     only for what is left.)
--   * every claim first merges the arrivals it can (job_store_arrivals_merge()): widens or creates their rows,
--     then deletes them, in its own transaction; an arrival whose row another transaction holds for writing, or
--     whose new row another transaction is creating, stays for the next claim, and meanwhile the claim reads its
--     store beside the directory.
--   * a claim makes a row tighter (bounds raised, types dropped: job_store_queues_tighten()) only under FOR UPDATE
--     (SKIP LOCKED, so never while a transaction holds the row FOR KEY SHARE or is widening it: FOR UPDATE
--     conflicts with both) and only from a statement that started after it got the lock (a fresh snapshot, which
--     sees every job committed before the lock). So it never raises a row above a job that is not visible yet.
--   * a claim raises served_at of the stores it serves (job_store_queues_serve()): wait_from only grows, still a
--     lower bound of a wait that has just restarted.
--   * a job leaving pending (claimed, cancelled, deleted) changes nothing: the row stays true, only looser, and the
--     claim tightens it when it finds nothing due there.
-- Why no one waits: rows are locked only with SKIP LOCKED; a row is inserted only under a try-lock of its key
-- (pg_try_advisory_xact_lock(20224, hashtext(store_key || '/' || priority)): advisory-lock class 20224 means
-- "this transaction is creating that directory row"; an INSERT racing another transaction's uncommitted INSERT
-- of the same key would wait for it, and two such transactions inserting two keys in opposite orders would
-- deadlock); an arrival is a plain insert. One wait remains, from PostgreSQL's row locking: FOR KEY SHARE on a row
-- whose newest version a claim is tightening (FOR UPDATE, then UPDATE, uncommitted) follows the update chain and
-- waits for that claim to commit, SKIP LOCKED or not. So an enqueue or a finish can wait for the rest of one claim
-- statement, and a claim's rescue trigger for another claim (a cycle of two is broken by the deadlock detector,
-- aborting one claim). A claim never tightens a row it widened itself in the same call, and tightens only rows that
-- would change. Transactions in REPEATABLE READ or SERIALIZABLE record arrivals only (locking a row a claim changed
-- since their snapshot would fail them, SKIP LOCKED or not).

SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- NULL for the rows made before this version: "any type" until the fill below has computed them.
ALTER TABLE job_store_queues ADD COLUMN IF NOT EXISTS types text[];
ALTER TABLE job_store_queues ADD COLUMN IF NOT EXISTS type_heads timestamptz[];
-- NULL for the arrivals recorded before this version: a job of some type.
ALTER TABLE job_store_arrivals ADD COLUMN IF NOT EXISTS type text;

-- Does a row (head_lb, types, type_heads) cover a job (its type and run_at)? See "covers" above.
CREATE OR REPLACE FUNCTION job_store_queues_covers(p_head_lb timestamptz, p_types text[], p_type_heads timestamptz[],
                                                   p_job_type text, p_run_at timestamptz)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT p_head_lb <= p_run_at
           AND (p_types IS NULL OR coalesce(p_type_heads[array_position(p_types, p_job_type)] <= p_run_at, false))
$fn$;

-- Jobs (parallel arrays, one element per job or per (priority, store, type) with its earliest run_at; a NULL type:
-- not known) grouped per (store, priority): the earliest run_at, and the types with each one's earliest run_at
-- (sorted by type; NULL, both, when a type is not known).
CREATE OR REPLACE FUNCTION job_store_queues_pairs(p_priority smallint[], p_store text[], p_type text[],
                                                  p_run_at timestamptz[])
RETURNS TABLE (store_key text, priority smallint, run_at timestamptz, types text[], type_heads timestamptz[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT t.store_key, t.priority, min(t.run_at),
           CASE WHEN bool_or(t.type IS NULL) THEN NULL ELSE array_agg(t.type ORDER BY t.type) END,
           CASE WHEN bool_or(t.type IS NULL) THEN NULL ELSE array_agg(t.run_at ORDER BY t.type) END
    FROM (SELECT u.store_key, u.priority, u.type, min(u.run_at) AS run_at
          FROM unnest(p_priority, p_store, p_type, p_run_at) AS u(priority, store_key, type, run_at)
          GROUP BY u.store_key, u.priority, u.type) AS t
    GROUP BY t.store_key, t.priority
$fn$;

-- The types that have a pending job anywhere: a loose index scan of jobs_fair_type_idx (type first), one descent
-- per type. Needed only to tighten a row whose types are not known.
CREATE OR REPLACE FUNCTION jobs_pending_types() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $fn$
    WITH RECURSIVE seen(type) AS (
        SELECT (SELECT min(j.type) FROM jobs j WHERE j.status = 'pending')
        UNION ALL
        SELECT (SELECT min(j.type) FROM jobs j WHERE j.status = 'pending' AND j.type > s.type)
        FROM seen s
        WHERE s.type IS NOT NULL
    )
    SELECT coalesce(array_agg(s.type ORDER BY s.type), '{}') FROM seen s WHERE s.type IS NOT NULL
$fn$;

-- The writes that make a row cover jobs, shared by the triggers (job_store_queues_cover()) and the claim's merge
-- of arrivals. Input: jobs as above. Neither waits: each returns the (store, priority) pairs it did; the caller
-- records or keeps the others as arrivals.

-- 2. Widen the existing rows of these pairs to cover the jobs, if nobody else holds them (SKIP LOCKED); the
-- update's lock is held until the caller's transaction ends, so no claim can tighten them meanwhile.
CREATE OR REPLACE FUNCTION job_store_queues_widen(p_priority smallint[], p_store text[], p_type text[],
                                                  p_run_at timestamptz[])
RETURNS TABLE (widened_store text, widened_priority smallint)
LANGUAGE sql VOLATILE
AS $fn$
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
$fn$;

-- 3. Insert the rows of these pairs that do not exist yet (a store's first job at a priority), with the store's
-- turn from its other rows, each under the try-lock of its key (class 20224, see the top): so no other transaction
-- is inserting the same key, which the INSERT would wait for. Pairs that have a row are left alone.
CREATE OR REPLACE FUNCTION job_store_queues_create(p_priority smallint[], p_store text[], p_type text[],
                                                   p_run_at timestamptz[])
RETURNS TABLE (created_store text, created_priority smallint)
LANGUAGE sql VOLATILE
AS $fn$
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
$fn$;

-- Jobs became pending (one element per (priority, store, type), its earliest run_at): 1. hold the rows that cover
-- them, else 2. widen, else 3. create, else 4. record arrivals. Never waits (see the top).
CREATE OR REPLACE FUNCTION job_store_queues_cover(p_priority smallint[], p_store text[], p_type text[],
                                                  p_run_at timestamptz[])
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
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
$fn$;

-- INSERT: one call per statement, whatever the number of rows (a batch enqueue of 1000 jobs costs one trigger).
-- The common case -- every (store, priority) of the statement already has a row covering its jobs -- is one
-- statement over the transition table (a statement over a transition table is planned anew on every call, so
-- there is one): hold those rows. Only when some are missing, start later, lack a type or are being tightened
-- does job_store_queues_cover() run.
CREATE OR REPLACE FUNCTION jobs_note_inserted_pending() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $fn$
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
$fn$;

-- UPDATE: per row, and only for rows that became pending or moved (the WHEN clause is checked without calling the
-- function, so a claim or a completion -- the hot updates -- costs nothing here). As above: hold the row that
-- covers the job, else job_store_queues_cover(). Per row, in any order: nothing here waits, so no order is needed.
CREATE OR REPLACE FUNCTION jobs_note_updated_pending() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $fn$
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
$fn$;

-- v1's trigger on INSERT is unchanged (its function is replaced above); the one on UPDATE also fires when a pending
-- job changes type (nothing in the service does that; a DBA might).
CREATE OR REPLACE TRIGGER jobs_store_queues_on_update
    AFTER UPDATE ON jobs
    FOR EACH ROW
    WHEN (NEW.status = 'pending'
          AND (OLD.status <> 'pending' OR NEW.run_at < OLD.run_at OR NEW.priority <> OLD.priority
               OR NEW.store_id IS DISTINCT FROM OLD.store_id OR NEW.type <> OLD.type))
    EXECUTE FUNCTION jobs_note_updated_pending();

-- v1's helper of the triggers: replaced by job_store_queues_cover().
DROP FUNCTION IF EXISTS job_store_queues_note(smallint[], text[], timestamptz[]);

-- v1's two writes, still called by jobs_fair_claim() v2 (sql/024) until sql/026 replaces it: now they widen or
-- create rows for jobs of a type they do not know (types NULL), so the rows stay true. sql/026 drops them.
CREATE OR REPLACE FUNCTION job_store_queues_lower(p_priority smallint[], p_store text[], p_run_at timestamptz[])
RETURNS TABLE (store_key text, priority smallint)
LANGUAGE sql VOLATILE
AS $fn$
    SELECT w.widened_store, w.widened_priority
    FROM job_store_queues_widen(p_priority, p_store, array_fill(NULL::text, ARRAY[cardinality(p_store)]),
                                p_run_at) AS w
$fn$;

CREATE OR REPLACE FUNCTION job_store_queues_add(p_priority smallint[], p_store text[], p_run_at timestamptz[])
RETURNS TABLE (store_key text, priority smallint)
LANGUAGE sql VOLATILE
AS $fn$
    SELECT c.created_store, c.created_priority
    FROM job_store_queues_create(p_priority, p_store, array_fill(NULL::text, ARRAY[cardinality(p_store)]),
                                 p_run_at) AS c
$fn$;

-- The claim's writes to the directory (jobs_fair_claim(), sql/026_fair_claim_v3.sql). Each plans its statements
-- once per session (force_generic_plan: their custom plans cost more to make than to run) and may sort (the claim
-- itself plans without sorts: enable_sort = on undoes that for these).

-- Merge the arrivals into the directory: widen or create their rows, then delete them. At most 10,000 arrivals per
-- call (the oldest first), so one claim's merge stays a few milliseconds even after a burst of arrivals (a batch
-- enqueued while a claim tightened its stores, or from snapshot-isolation transactions); a backlog is merged over
-- the next calls. An arrival another claim is merging (SKIP LOCKED), or whose row another transaction holds for
-- writing or is creating, stays for a later claim. Returns the rows it widened: the caller must not tighten them
-- in the same transaction (a transaction holding an older version FOR KEY SHARE would wait for it).
CREATE OR REPLACE FUNCTION job_store_arrivals_merge()
RETURNS TABLE (merged_store text, merged_priority smallint)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_sort = on
AS $fn$
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
$fn$;

-- The stores a claim served get their turn: served_at = now() and served_pos (where the store's last job stood in
-- the claim's order), on every row of the store (the turn is the store's, whatever priority or type it was served
-- at). A row another caller is writing is skipped (SKIP LOCKED): it writes about the same turn, and a skipped row
-- keeps an earlier one, still a lower bound of the wait. An enqueue's FOR KEY SHARE does not block this.
CREATE OR REPLACE FUNCTION job_store_queues_serve(p_store text[], p_pos integer[])
RETURNS void
LANGUAGE sql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_sort = on
AS $fn$
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
$fn$;

-- What a row would say if it were exact: the run_at of the store's oldest pending job at the priority ('infinity':
-- none; jobs_fair_idx), and the candidate types that have a pending job there, each with its oldest (one probe of
-- jobs_fair_type_idx each).
CREATE OR REPLACE FUNCTION job_store_queues_exact(p_priority smallint, p_store text, p_candidate_types text[])
RETURNS TABLE (exact_head_lb timestamptz, exact_types text[], exact_type_heads timestamptz[])
LANGUAGE sql STABLE
AS $fn$
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
$fn$;

-- Make rows exact (bounds raised to the oldest pending jobs, types without one dropped), safely: only the rows that
-- would change are locked, FOR UPDATE SKIP LOCKED (so not one an enqueue in flight holds FOR KEY SHARE or is
-- widening), and their values are computed again by a statement that starts after the lock, whose snapshot sees
-- every job committed before it. A job committed later went through a trigger that found the row locked (an
-- arrival) or, after this transaction, tightened. Candidate types: the row's own (a job of another type is covered
-- by an arrival), or, when the row's are not known, every type with a pending job. Returns the rows written.
-- Called by a claim for the rows in which it found nothing due of the types it wanted, and for rows whose types are
-- not known; by the fill at the end of this file.
CREATE OR REPLACE FUNCTION job_store_queues_tighten(p_priority smallint[], p_store text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_sort = on
AS $fn$
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
$fn$;

-- The fill: the types of the rows made before this version, computed by tightening them, 1,000 rows per
-- transaction (a row an enqueue holds right then is skipped; up to five sweeps, 0.1 s apart; a row still not known
-- after that is computed by the first claim that reads it). After the triggers above, so every job that becomes
-- pending from now on is covered with its type. Reads, per row, its store's oldest pending job and one probe per
-- type with a pending job; locks directory rows only.
DO $$
DECLARE
    batch_priorities smallint[];
    batch_stores     text[];
    after_priority   smallint;
    after_store      text;
BEGIN
    FOR sweep IN 1 .. 5 LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM job_store_queues q WHERE q.types IS NULL);
        IF sweep > 1 THEN
            PERFORM pg_sleep(0.1);
        END IF;
        after_priority := 0;
        after_store := '';
        LOOP
            SELECT coalesce(array_agg(b.priority ORDER BY b.priority, b.store_key), '{}'),
                   coalesce(array_agg(b.store_key ORDER BY b.priority, b.store_key), '{}')
            INTO batch_priorities, batch_stores
            FROM (SELECT q.priority, q.store_key
                  FROM job_store_queues q
                  WHERE q.types IS NULL AND (q.priority, q.store_key) > (after_priority, after_store)
                  ORDER BY q.priority, q.store_key
                  LIMIT 1000) AS b;
            EXIT WHEN cardinality(batch_stores) = 0;
            PERFORM job_store_queues_tighten(batch_priorities, batch_stores);
            COMMIT;
            after_priority := batch_priorities[cardinality(batch_priorities)];
            after_store := batch_stores[cardinality(batch_stores)];
        END LOOP;
    END LOOP;
END
$$;

RESET lock_timeout;
RESET statement_timeout;
