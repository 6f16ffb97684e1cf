-- The directory of store queues, v1: which stores have pending jobs at which priority, and since when they have
-- waited, kept up to date by triggers on jobs, so that the fair claim (jobs_fair_claim(), sql/024_fair_claim_v2.sql)
-- reads the few stores whose turn it is instead of probing every store with a pending job. Applied by Alembic
-- revision 0007_store_queues (statement by statement, each its own transaction) and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/023_job_store_queues_v1.sql        (without -1 / --single-transaction)
-- Idempotent (IF NOT EXISTS, CREATE OR REPLACE, an upsert that only lowers). Locks: each CREATE TRIGGER takes SHARE
-- ROW EXCLUSIVE on jobs for an instant (writes to jobs wait that long, reads do not); the fill at the end is a
-- transaction of its own that only reads jobs (about 1 s per million pending jobs here). Never edit this file once
-- released: add a _v2 file instead.
--
-- What a row says. One row per (store, priority) that has had a pending job (store_key '' for jobs without a
-- store). The fair claim ranks a level's stores by how long each has waited: since its oldest due job became due
-- or since it was last served, whichever is later -- greatest(H, T), H the run_at of its oldest pending job at the
-- level, T the store's last turn. The rows hold the turns: served_at (T) and served_pos (where the store's last job
-- stood in that call's claim order, the tie-break), the same on every row of a store (a claim writes all of them;
-- this replaces v1's job_store_turns). And a row holds a LOWER BOUND of the wait, wait_from =
-- greatest(head_lb, served_at), where head_lb <= the run_at of every pending job of the store at the level
-- ('infinity': none pending).
-- The claim reads rows in wait_from order, probes each store's real head, and stops once the stores it has placed
-- are certain to rank before every row not yet read (their real wait is below the next row's lower bound): about
-- as many probes as the claim has slots, whatever the number of stores.
--
-- Who keeps the bound true, without anybody ever waiting for a directory row:
--   * every way a job becomes pending (INSERT; UPDATE to pending: a retry, a release, a rescue, a manual retry;
--     an UPDATE moving a pending job earlier or to another store/priority) runs a trigger that, in its own
--     transaction and until it ends: holds the row covering the job (head_lb <= its run_at) FOR KEY SHARE; or
--     lowers the row (its update lock is held); or inserts the store's first row at that level -- each only if it
--     can without waiting (SKIP LOCKED, a try-lock on a new row's key); otherwise it records the job's (store,
--     priority, run_at) in job_store_arrivals, in the same transaction as the job;
--   * every claim first merges the arrivals it can: it lowers (or creates) the rows they name, then deletes them,
--     in its own transaction; an arrival whose row another claim is writing is left for the next claim;
--   * the claim raises served_at of the stores it serves to now() (a wait only grows when a store is served:
--     always safe), and raises head_lb of a row only after finding its store with no due job at the level: it
--     locks the row FOR UPDATE SKIP LOCKED (so never while a transaction holding FOR KEY SHARE is in flight: FOR
--     UPDATE conflicts with it) and, in a later statement (a fresh snapshot, which sees every job committed before
--     the lock), sets head_lb to the store's real oldest pending run_at, or 'infinity'.
--   So a pending job is either under a row no claim can raise before the job is visible, or in an arrival that
--   becomes visible with it and stays until a claim has lowered its row: none is lost to the fair claim.
--   * a job leaving pending (claimed, cancelled, deleted) changes nothing: the bound stays true, only looser, and
--     the claim tightens it the next time it reads the row.
-- Waits: the triggers and the claim lock directory rows only with SKIP LOCKED, insert a row only under the try-lock
-- of its key (pg_try_advisory_xact_lock(20224, ...), taken by whoever inserts one), and otherwise insert into
-- job_store_arrivals, which has no unique key. So nothing waits for an enqueue or a finish, and claims wait for
-- nothing. One wait remains: FOR KEY SHARE on a row whose newest version a claim is tightening (FOR UPDATE, then
-- UPDATE) follows the update chain and waits for that claim to commit even with SKIP LOCKED (PostgreSQL locks the
-- newer versions of a row changed by a non-key update that way); so an enqueue or a finish can wait for the rest
-- of one claim statement, and a claim's rescue trigger for another claim (a cycle of two claims is then broken by
-- the deadlock detector, aborting one claim). A claim never tightens a row it lowered itself in the same call.
-- Transactions in REPEATABLE READ or SERIALIZABLE record arrivals only (locking a row changed since their snapshot
-- would fail them). The fill below inserts rows without the try-lock: during the migration, an enqueue inserting
-- a store's first row may wait for it (both go in key order, so they cannot deadlock).

SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- PRIMARY KEY (store_key, priority): a row by its pair, and a store's rows together (a claim writes the turn on
-- all of them; a store's first row at a new level copies the turn from the others).
CREATE TABLE IF NOT EXISTS job_store_queues (
    store_key  text        NOT NULL,
    priority   smallint    NOT NULL,
    head_lb    timestamptz NOT NULL,
    served_at  timestamptz NOT NULL DEFAULT '-infinity',
    served_pos integer     NOT NULL DEFAULT 0,
    wait_from  timestamptz GENERATED ALWAYS AS (greatest(head_lb, served_at)) STORED,
    PRIMARY KEY (store_key, priority)
);

-- Serves the fair claim's read of a level's stores in wait order (jobs_fair_claim(), sql/024): a range scan from
-- the longest-waiting store, stopped after about as many rows as the claim has slots. The key after wait_from is
-- a lower bound of the rest of the claim's rank order (turn position, head's run_at, store), so that stores tied
-- on their wait (a batch enqueued in one statement) are placed from the rows read, not after reading every tie.
CREATE INDEX IF NOT EXISTS job_store_queues_wait_idx
    ON job_store_queues (priority, wait_from, served_pos, head_lb, store_key);

-- Small and rewritten by every claim (served_at of the stores served): vacuum it after a little churn, so the wait
-- index the claim scans from its start does not fill up with dead entries of rows served long ago.
-- (squawk's prefer-robust-stmts: setting storage parameters is idempotent, a re-run sets the same values)
-- squawk-ignore prefer-robust-stmts
ALTER TABLE job_store_queues SET (
    fillfactor = 70,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);

-- Jobs that became pending without a row holding them (see above); merged and deleted by the next claims. Empty
-- most of the time: a store with work waiting already has a row that covers what it enqueues next.
CREATE TABLE IF NOT EXISTS job_store_arrivals (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store_key text        NOT NULL,
    priority  smallint    NOT NULL,
    run_at    timestamptz NOT NULL
);

-- Inserted and deleted all day, a few rows at a time: vacuum it often.
-- (squawk's prefer-robust-stmts: setting storage parameters is idempotent, a re-run sets the same values)
-- squawk-ignore prefer-robust-stmts
ALTER TABLE job_store_arrivals SET (
    autovacuum_vacuum_threshold = 200,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);

-- The two writes that make a row cover jobs, shared by the triggers (job_store_queues_note()) and the claim's merge
-- of arrivals (jobs_fair_claim(), sql/024). Input: one (store, priority) pair per element, with its earliest run_at.
-- Neither waits: each returns the pairs it could do; the caller records or keeps the others as arrivals.

-- Lower the existing rows of these pairs to their run_at, if nobody else holds them (SKIP LOCKED); the update's
-- lock is held until the caller's transaction ends, so no claim can tighten them meanwhile.
CREATE OR REPLACE FUNCTION job_store_queues_lower(p_priority smallint[], p_store text[], p_run_at timestamptz[])
RETURNS TABLE (store_key text, priority smallint)
LANGUAGE sql VOLATILE
AS $fn$
    WITH w AS (
        SELECT u.priority, u.store_key, u.run_at
        FROM unnest(p_priority, p_store, p_run_at) AS u(priority, store_key, run_at)
    ), mine AS (
        SELECT d.store_key, d.priority
        FROM job_store_queues d JOIN w ON d.store_key = w.store_key AND d.priority = w.priority
        ORDER BY d.store_key, d.priority
        FOR NO KEY UPDATE OF d SKIP LOCKED
    )
    UPDATE job_store_queues d SET head_lb = least(d.head_lb, w.run_at)
    FROM mine m JOIN w ON w.store_key = m.store_key AND w.priority = m.priority
    WHERE d.store_key = m.store_key AND d.priority = m.priority
    RETURNING d.store_key, d.priority
$fn$;

-- Insert the rows of these pairs that do not exist yet (a store's first job at a level), with the store's turn
-- from its other rows, each under a transaction-scoped try-lock on its key: so no other transaction is inserting
-- the same key, which the INSERT would wait for. Pairs that have a row are left alone.
CREATE OR REPLACE FUNCTION job_store_queues_add(p_priority smallint[], p_store text[], p_run_at timestamptz[])
RETURNS TABLE (store_key text, priority smallint)
LANGUAGE sql VOLATILE
AS $fn$
    INSERT INTO job_store_queues AS d (store_key, priority, head_lb, served_at, served_pos)
    SELECT w.store_key, w.priority, w.run_at, coalesce(t.served_at, '-infinity'), coalesce(t.served_pos, 0)
    FROM unnest(p_priority, p_store, p_run_at) AS w(priority, store_key, run_at)
    LEFT JOIN LATERAL (SELECT o.served_at, o.served_pos FROM job_store_queues o
                       WHERE o.store_key = w.store_key ORDER BY o.served_at DESC LIMIT 1) AS t ON true
    WHERE NOT EXISTS (SELECT 1 FROM job_store_queues c
                      WHERE c.store_key = w.store_key AND c.priority = w.priority)
      AND pg_try_advisory_xact_lock(20224, hashtext(w.store_key || '/' || w.priority))
    ORDER BY w.store_key, w.priority
    ON CONFLICT (store_key, priority) DO NOTHING
    RETURNING d.store_key, d.priority
$fn$;

-- Jobs became pending at these (store, priority) pairs, the earliest run_at of each. Never waits: every lock is
-- SKIP LOCKED, a new row is inserted only under a try-lock on its key (so no other transaction is inserting it),
-- and a pair none of that works for becomes an arrival (job_store_arrivals has no unique key).
CREATE OR REPLACE FUNCTION job_store_queues_note(p_priority smallint[], p_store text[], p_run_at timestamptz[])
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_store    text[];
    v_priority smallint[];
    r_store    text[];
    r_priority smallint[];
    r_run_at   timestamptz[];
BEGIN
    -- 1. rows that cover the jobs: hold them FOR KEY SHARE until this transaction ends, so no claim can raise them
    -- above the jobs before they are committed and visible to it. Concurrent transactions of one store share this
    -- lock; a claim serving the store (FOR NO KEY UPDATE) does not conflict with it; a claim tightening the row
    -- (FOR UPDATE) does, and then the row is skipped here.
    SELECT coalesce(array_agg(x.store_key), '{}'), coalesce(array_agg(x.priority), '{}')
    INTO v_store, v_priority
    FROM (SELECT d.store_key, d.priority
          FROM job_store_queues d
          JOIN unnest(p_priority, p_store, p_run_at) AS w(priority, store_key, run_at)
            ON d.store_key = w.store_key AND d.priority = w.priority
          WHERE d.head_lb <= w.run_at
          ORDER BY d.store_key, d.priority
          FOR KEY SHARE OF d SKIP LOCKED) AS x;
    -- the pairs not held: 2. rows that start later than the jobs (a store that ran dry, a job moved earlier) are
    -- lowered, 3. a store's first row at the level is created -- each only if it can be done without waiting --
    -- 4. the rest (a row another transaction is tightening, lowering or creating) become arrivals
    SELECT coalesce(array_agg(w.priority), '{}'), coalesce(array_agg(w.store_key), '{}'),
           coalesce(array_agg(w.run_at), '{}')
    INTO r_priority, r_store, r_run_at
    FROM unnest(p_priority, p_store, p_run_at) AS w(priority, store_key, run_at)
    WHERE NOT EXISTS (SELECT 1 FROM unnest(v_store, v_priority) AS h(store_key, priority)
                      WHERE h.store_key = w.store_key AND h.priority = w.priority);
    IF cardinality(r_store) = 0 THEN
        RETURN;
    END IF;
    SELECT v_store || coalesce(array_agg(l.store_key), '{}'), v_priority || coalesce(array_agg(l.priority), '{}')
    INTO v_store, v_priority
    FROM job_store_queues_lower(r_priority, r_store, r_run_at) AS l;
    SELECT v_store || coalesce(array_agg(n.store_key), '{}'), v_priority || coalesce(array_agg(n.priority), '{}')
    INTO v_store, v_priority
    FROM job_store_queues_add(r_priority, r_store, r_run_at) AS n;
    INSERT INTO job_store_arrivals (store_key, priority, run_at)
    SELECT w.store_key, w.priority, w.run_at
    FROM unnest(r_priority, r_store, r_run_at) AS w(priority, store_key, run_at)
    WHERE NOT EXISTS (SELECT 1 FROM unnest(v_store, v_priority) AS h(store_key, priority)
                      WHERE h.store_key = w.store_key AND h.priority = w.priority);
END
$fn$;

-- INSERT: one call per statement, whatever the number of rows (a batch enqueue of 1000 jobs costs one trigger).
-- The common case -- every (store, priority) of the statement already has a row covering its jobs -- is one
-- statement over the transition table (each one is planned anew per call, so there is one): hold those rows.
-- Only when some are missing, start later or are being tightened does job_store_queues_note() run.
CREATE OR REPLACE FUNCTION jobs_note_inserted_pending() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_missing bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- a REPEATABLE READ or SERIALIZABLE transaction would fail ("could not serialize access") on locking a
        -- row a claim has changed since its snapshot, SKIP LOCKED or not: arrivals, plain inserts, cannot fail so
        INSERT INTO job_store_arrivals (store_key, priority, run_at)
        SELECT coalesce(i.store_id, ''), i.priority, min(i.run_at)
        FROM inserted_jobs i
        WHERE i.status = 'pending'
        GROUP BY coalesce(i.store_id, ''), i.priority;
        RETURN NULL;
    END IF;
    WITH pairs AS (
        SELECT i.priority, coalesce(i.store_id, '') AS store_key, min(i.run_at) AS run_at
        FROM inserted_jobs i
        WHERE i.status = 'pending'
        GROUP BY i.priority, coalesce(i.store_id, '')
    ), held AS (
        SELECT d.store_key
        FROM job_store_queues d
        JOIN pairs p ON d.store_key = p.store_key AND d.priority = p.priority
        WHERE d.head_lb <= p.run_at
        ORDER BY d.store_key, d.priority
        FOR KEY SHARE OF d SKIP LOCKED
    )
    SELECT (SELECT count(*) FROM pairs) - (SELECT count(*) FROM held) INTO v_missing;
    IF v_missing > 0 THEN
        PERFORM job_store_queues_note(array_agg(n.priority), array_agg(n.store_key), array_agg(n.run_at))
        FROM (SELECT i.priority, coalesce(i.store_id, '') AS store_key, min(i.run_at) AS run_at
              FROM inserted_jobs i
              WHERE i.status = 'pending'
              GROUP BY i.priority, coalesce(i.store_id, '')) AS n;
    END IF;
    RETURN NULL;
END
$fn$;

-- UPDATE: per row, and only for rows that became pending or moved (the WHEN clause is checked without calling the
-- function, so a claim or a completion -- the hot updates -- costs nothing here). As above: hold the row that
-- covers the job, else job_store_queues_note(). Per row, in any order: nothing here waits, so no order is needed.
CREATE OR REPLACE FUNCTION jobs_note_updated_pending() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN  -- as in jobs_note_inserted_pending()
        INSERT INTO job_store_arrivals (store_key, priority, run_at)
        VALUES (coalesce(NEW.store_id, ''), NEW.priority, NEW.run_at);
        RETURN NULL;
    END IF;
    PERFORM 1
    FROM job_store_queues d
    WHERE d.store_key = coalesce(NEW.store_id, '') AND d.priority = NEW.priority AND d.head_lb <= NEW.run_at
    FOR KEY SHARE SKIP LOCKED;
    IF NOT FOUND THEN
        PERFORM job_store_queues_note(ARRAY[NEW.priority], ARRAY[coalesce(NEW.store_id, '')], ARRAY[NEW.run_at]);
    END IF;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE TRIGGER jobs_store_queues_on_insert
    AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_note_inserted_pending();

CREATE OR REPLACE TRIGGER jobs_store_queues_on_update
    AFTER UPDATE ON jobs
    FOR EACH ROW
    WHEN (NEW.status = 'pending'
          AND (OLD.status <> 'pending' OR NEW.run_at < OLD.run_at OR NEW.priority <> OLD.priority
               OR NEW.store_id IS DISTINCT FROM OLD.store_id))
    EXECUTE FUNCTION jobs_note_updated_pending();

-- The jobs already pending (after the triggers exist, so nothing enqueued meanwhile is missed: it is held by a row
-- or recorded as an arrival; the upsert only lowers), with each store's last turn from v1's job_store_turns
-- (sql/022; sql/024 drops it). One statement, its own transaction: it reads jobs, and locks no row of it.
DO $$
BEGIN
    IF to_regclass('job_store_turns') IS NOT NULL THEN
        INSERT INTO job_store_queues AS d (store_key, priority, head_lb, served_at, served_pos)
        SELECT p.store_key, p.priority, p.run_at, coalesce(t.served_at, '-infinity'), coalesce(t.served_pos, 0)
        FROM (SELECT coalesce(j.store_id, '') AS store_key, j.priority, min(j.run_at) AS run_at
              FROM jobs j
              WHERE j.status = 'pending'
              GROUP BY coalesce(j.store_id, ''), j.priority) AS p
        LEFT JOIN job_store_turns t ON t.store_key = p.store_key
        ORDER BY p.store_key, p.priority
        ON CONFLICT (store_key, priority) DO UPDATE SET head_lb = least(d.head_lb, excluded.head_lb);
    ELSE
        INSERT INTO job_store_queues AS d (store_key, priority, head_lb)
        SELECT coalesce(j.store_id, ''), j.priority, min(j.run_at)
        FROM jobs j
        WHERE j.status = 'pending'
        GROUP BY coalesce(j.store_id, ''), j.priority
        ORDER BY 1, 2
        ON CONFLICT (store_key, priority) DO UPDATE SET head_lb = least(d.head_lb, excluded.head_lb);
    END IF;
END
$$;

RESET lock_timeout;
RESET statement_timeout;
