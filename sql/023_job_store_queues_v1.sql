-- The directory of store queues, v1: which stores have pending jobs at which priority, and since when they have
-- waited, kept up to date by triggers on jobs, so that the fair claim (jobs_fair_claim(), sql/024_fair_claim_v2.sql)
-- reads the few stores whose turn it is instead of probing every store with a pending job. Applied by Alembic
-- revision 0007_store_queues and runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/023_job_store_queues_v1.sql
-- Idempotent (IF NOT EXISTS, CREATE OR REPLACE, an upsert that only lowers). Locks: creating the triggers takes
-- SHARE ROW EXCLUSIVE on jobs for an instant (writes to jobs wait that long, reads do not); filling the directory
-- reads the pending jobs through jobs_fair_idx. Never edit this file once released: add a _v2 file instead.
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
-- Who keeps the bound true:
--   * every way a job becomes pending (INSERT; UPDATE to pending: a retry, a release, a rescue, a manual retry;
--     an UPDATE moving a pending job earlier or to another store/priority) runs job_store_queues_note(), which
--     lowers head_lb to the job's run_at when it is not already at or below it -- and then holds the row with
--     FOR KEY SHARE until its transaction ends;
--   * the claim raises served_at of the stores it serves to now() (a wait only grows when a store is served:
--     always safe; a row a concurrent claim is writing is skipped, and keeps an earlier, still lower, bound), and
--     raises head_lb of a row only after finding its store with no due job at the level: it
--     locks the row FOR UPDATE SKIP LOCKED (so never while an enqueue holding FOR KEY SHARE is in flight: FOR
--     UPDATE conflicts with it) and, in a later statement (a fresh snapshot, seeing every enqueue committed before
--     the lock), sets head_lb to the store's real oldest pending run_at, or 'infinity'. An enqueue that comes after
--     the lock waits for the claim to commit, then sees the raised row and lowers it again. So no pending job is
--     ever behind its row's head_lb: none is lost to the fair claim, whatever the interleaving.
--   * a job leaving pending (claimed, cancelled, deleted) changes nothing: the bound stays true, only looser, and
--     the claim tightens it the next time it reads the row.

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
-- the longest-waiting store, stopped after about as many rows as the claim has slots.
CREATE INDEX IF NOT EXISTS job_store_queues_wait_idx ON job_store_queues (priority, wait_from, store_key);

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

-- Jobs became pending at these (priority, store) pairs, the earliest run_at of each: make every row cover them.
CREATE OR REPLACE FUNCTION job_store_queues_note(p_priority smallint[], p_store text[], p_run_at timestamptz[])
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    -- Rows that already cover the jobs: hold them (FOR KEY SHARE, until this transaction ends) so that no claim can
    -- raise their head_lb above the jobs before they are committed and visible to it. Concurrent enqueues of one
    -- store share this lock: they never wait for each other here.
    PERFORM 1
    FROM job_store_queues d
    JOIN unnest(p_priority, p_store, p_run_at) AS w(priority, store_key, run_at)
      ON d.priority = w.priority AND d.store_key = w.store_key
    WHERE d.head_lb <= w.run_at
    ORDER BY d.store_key, d.priority
    FOR KEY SHARE OF d;
    -- The others (no row yet, or its head_lb is later than the job): insert or lower. Usually nothing: a store with
    -- work waiting already has a row that covers what it enqueues next. A new row takes the store's turn from its
    -- other rows. Sorted, so that two enqueues inserting overlapping new stores lock them in the same order.
    INSERT INTO job_store_queues AS d (store_key, priority, head_lb, served_at, served_pos)
    SELECT w.store_key, w.priority, w.run_at, coalesce(t.served_at, '-infinity'), coalesce(t.served_pos, 0)
    FROM unnest(p_priority, p_store, p_run_at) AS w(priority, store_key, run_at)
    LEFT JOIN LATERAL (SELECT o.served_at, o.served_pos FROM job_store_queues o
                       WHERE o.store_key = w.store_key ORDER BY o.served_at DESC LIMIT 1) AS t ON true
    WHERE NOT EXISTS (SELECT 1 FROM job_store_queues c
                      WHERE c.store_key = w.store_key AND c.priority = w.priority AND c.head_lb <= w.run_at)
    ORDER BY w.store_key, w.priority
    ON CONFLICT (store_key, priority) DO UPDATE SET head_lb = least(d.head_lb, excluded.head_lb);
END
$fn$;

-- INSERT: one call per statement, whatever the number of rows (a batch enqueue of 1000 jobs costs one trigger).
-- The common case -- every (store, priority) of the statement already has a row covering its jobs -- is one
-- statement over the transition table (each one is planned anew per call, so there is one): hold those rows.
-- Only when some are missing or start later does job_store_queues_note() run.
CREATE OR REPLACE FUNCTION jobs_note_inserted_pending() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_missing bigint;
BEGIN
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
        FOR KEY SHARE OF d
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
-- function, so a claim or a completion -- the hot updates -- costs nothing here). Common case as above: hold the
-- row that covers the job.
CREATE OR REPLACE FUNCTION jobs_note_updated_pending() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    PERFORM 1
    FROM job_store_queues d
    WHERE d.store_key = coalesce(NEW.store_id, '') AND d.priority = NEW.priority AND d.head_lb <= NEW.run_at
    FOR KEY SHARE;
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

-- The jobs already pending (after the triggers exist, so nothing enqueued meanwhile is missed; the upsert only
-- lowers), with each store's last turn from v1's job_store_turns (sql/022; sql/024 drops it).
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
