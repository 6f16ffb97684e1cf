-- Light workflows (issue 16), v1: dependencies between jobs, batch completion callbacks, resumable steps and
-- singleton keys. Applied by Alembic revision 0015_workflows (statement by statement, each its own transaction) and
-- runnable by hand:
--   psql -v ON_ERROR_STOP=1 -f sql/013_jobs_workflows_v1.sql        (without -1 / --single-transaction)
-- Idempotent (IF NOT EXISTS, CREATE OR REPLACE, constraint changes guarded by the catalogue). Never edit this file
-- once released: add a _v2 file instead. Its indexes are built CONCURRENTLY by 014_jobs_workflow_indexes_v1.sql.
-- Locks: each ADD COLUMN, ADD CONSTRAINT ... NOT VALID, the swap of the status CHECK and each CREATE TRIGGER takes
-- its lock on jobs for an instant (ACCESS EXCLUSIVE / SHARE ROW EXCLUSIVE: writes, and for ACCESS EXCLUSIVE reads,
-- wait that long); the two VALIDATE CONSTRAINT statements read the whole table under SHARE UPDATE EXCLUSIVE (reads
-- and writes go on). Each waits at most lock_timeout behind an open transaction, then gives up.
--
-- The model. A job may depend on parents (job_dependencies, one row per edge). While a parent has not ended, the
-- child is `waiting` -- its own status, never `pending`, so no claim ever reads it (the claim's indexes and the
-- directory of store queues, sql/023, hold pending jobs only). jobs.waits_for counts the child's edges not resolved
-- yet; an edge is resolved once, when its parent ends (completed, failed or cancelled, or is deleted before it
-- ended). When the last edge resolves, the child becomes `pending` in the same transaction as that parent's end;
-- when a parent ends other than completed, a child with on_parent_failure 'cancel' (the default) is cancelled with
-- a last_error naming the parent, and its own waiting descendants after it; with 'run' it counts as resolved.
-- Parents exist before their children (an enqueue names existing jobs, or earlier jobs of its own request), so the
-- graph has no cycle.
--
-- Who resolves, whatever ends a job (a finish, a lease rescue that fails it, a cancel, a bulk change, a delete):
--   * jobs.has_dependents marks a job others wait for. A row-level trigger whose WHEN clause checks it (so the
--     claim, START, finishes of other jobs and the heartbeat -- the hot updates -- never call a function) notes
--     each such job that ends in a transaction-local setting (set_config(..., true): gone at commit or rollback,
--     nothing kept across transactions, so it works through PgBouncer in transaction mode);
--   * a statement-level trigger (one call per UPDATE statement, which reads that setting and returns) resolves
--     every job the statement ended at once: jobs_workflow_resolve(), one UPDATE of the edges and one of the
--     children whatever their number (a parent with 1,000 waiting children: one statement's work, no round trip),
--     and, for a cascade, the same again per level in a loop (never nested trigger calls: a chain of any length
--     costs no stack);
--   * a statement-level DELETE trigger (transition table: deletes are cleanup's batches and manual) resolves the
--     jobs deleted before they ended, and removes the edges, steps and callback of deleted jobs.
-- Races. A child's counter is changed only under its row lock, so concurrent finishes of its parents (each in its
-- own call) serialize on it and exactly one of them sees the counter reach 0. The children are locked first, in id
-- order, in one statement (and, when something failed, every waiting descendant the cascade can reach, in id
-- order), before any is changed: concurrent finishes of siblings that share children take those locks in the same
-- order and cannot deadlock each other. The children are then changed in a statement of its own, whose snapshot
-- sees everything committed while the locks were waited for (a batch callback's counts). An enqueue locks the
-- existing parents it names (FOR NO KEY UPDATE, in id order) and sets their has_dependents before adding edges:
-- a parent's end waits for that enqueue to commit, and then sees its edges; an enqueue that comes after sees the
-- parent ended, and resolves the edge itself at once.
--
-- A batch callback (POST /jobs {"jobs": [...], "on_complete": {...}}) is a child of every job of the batch (those
-- of its request and those already in the batch), with on_parent_failure 'run': it becomes pending exactly once,
-- when none of them can still run, and then carries the batch's counts (job_batch_summary()) in its payload.
-- Steps (job.step() in a handler) are rows of job_steps, written as each step finishes.

SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- Columns of jobs. Constant defaults (or none): catalogue-only changes, no rewrite.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS waits_for integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS on_parent_failure text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS has_dependents boolean NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS singleton_key text;

COMMENT ON COLUMN jobs.waits_for IS 'parents whose end this job still waits for (status waiting until 0)';
COMMENT ON COLUMN jobs.on_parent_failure IS 'cancel | run: what a parent that ends other than completed does to '
                                            'this job; NULL: the job has no parents';
COMMENT ON COLUMN jobs.has_dependents IS 'other jobs wait for this one to end (its end resolves them)';
COMMENT ON COLUMN jobs.singleton_key IS 'at most one job per key is waiting, pending or running '
                                        '(jobs_singleton_key_idx)';

-- The status list gains `waiting`: a new CHECK, NOT VALID (no scan under the ACCESS EXCLUSIVE lock), validated in
-- its own statement (a scan under SHARE UPDATE EXCLUSIVE: reads and writes go on), then swapped for the old one
-- (DROP + RENAME: an instant), keeping the name jobs_status_check.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'jobs'::regclass AND conname IN ('jobs_status_check', 'jobs_status_check_v2')
                     AND pg_get_constraintdef(oid) LIKE '%waiting%') THEN
        ALTER TABLE jobs ADD CONSTRAINT jobs_status_check_v2
            CHECK (status IN ('waiting', 'pending', 'running', 'completed', 'failed', 'cancelled')) NOT VALID;
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_status_check_v2' AND NOT convalidated) THEN
        ALTER TABLE jobs VALIDATE CONSTRAINT jobs_status_check_v2;
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_status_check_v2'
                                            AND convalidated) THEN
        ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_status_check;
        ALTER TABLE jobs RENAME CONSTRAINT jobs_status_check_v2 TO jobs_status_check;
    END IF;
END
$$;

-- on_parent_failure's values, the same way (a new column: the validation finds only NULLs)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_on_parent_failure_check') THEN
        ALTER TABLE jobs ADD CONSTRAINT jobs_on_parent_failure_check
            CHECK (on_parent_failure IN ('cancel', 'run')) NOT VALID;
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'jobs'::regclass AND conname = 'jobs_on_parent_failure_check'
                 AND NOT convalidated) THEN
        ALTER TABLE jobs VALIDATE CONSTRAINT jobs_on_parent_failure_check;
    END IF;
END
$$;

-- One row per edge: child_id waits for parent_id. resolved: the parent's end has been counted (once: a parent
-- retried by hand that ends again does not count twice). The primary key serves the resolution (a parent's edges)
-- and a job's children; jobs_dependencies_child_idx (sql/014) a job's parents. No foreign keys: an edge goes with
-- its child (the DELETE trigger below); a deleted parent's edges stay, so the child still shows it.
CREATE TABLE IF NOT EXISTS job_dependencies (
    parent_id bigint  NOT NULL,
    child_id  bigint  NOT NULL,
    resolved  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (parent_id, child_id)
);

-- A batch's on_complete job (at most one per batch).
CREATE TABLE IF NOT EXISTS job_batch_callbacks (
    batch_id   text        PRIMARY KEY,
    job_id     bigint      NOT NULL CONSTRAINT job_batch_callbacks_job_id_key UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A handler's finished steps: job.step(name, fn) stores fn's JSON result here as soon as fn returns (its own short
-- transaction), and a later run of the same job gets it back instead of running fn again. Kept across retries;
-- removed with the job (the DELETE trigger below). Sizes are bounded by the writer (JOBS_MAX_STEP_BYTES).
CREATE TABLE IF NOT EXISTS job_steps (
    job_id     bigint      NOT NULL,
    name       text        NOT NULL CONSTRAINT job_steps_name_check CHECK (name <> '' AND length(name) <= 200),
    result     jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

-- A batch's counts per status (every status, 0 included), total and batch id: the `batch` object a callback's
-- payload gets when it is released. One read of jobs_batch_idx.
CREATE OR REPLACE FUNCTION job_batch_summary(p_batch_id text) RETURNS jsonb
LANGUAGE sql STABLE
AS $fn$
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
$fn$;

-- These jobs ended (or were deleted before they ended): resolve their children's edges, and release, cancel or
-- keep waiting each child. Called by the triggers below for whatever a statement ended, and by an enqueue for the
-- parents it names that had already ended. See the header for the locking. A cascade goes level by level in a loop
-- here (the children this call cancels are the next level), not through nested trigger calls: a chain of any length
-- costs one call, never the stack (a finish, or a claim whose rescue fails a chain's head, must not fail for it).
CREATE OR REPLACE FUNCTION jobs_workflow_resolve(p_ended bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
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
$fn$;

-- Row: a job others wait for has just ended; remember its id until the statement's end (a transaction-local
-- setting; the WHEN clause of the trigger keeps every other update away from this function).
CREATE OR REPLACE FUNCTION jobs_workflow_note_end() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    PERFORM set_config('jobprocessor.workflow_ended',
                       concat_ws(',', nullif(current_setting('jobprocessor.workflow_ended', true), ''), NEW.id),
                       true);
    RETURN NULL;
END
$fn$;

-- Statement: resolve what the statement's rows ended (one call per UPDATE statement: a read of the setting). Inside
-- jobs_workflow_resolve() (its own UPDATE of the children) it leaves them to the resolution's loop.
CREATE OR REPLACE FUNCTION jobs_workflow_after_update() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_ended text := current_setting('jobprocessor.workflow_ended', true);
BEGIN
    IF v_ended <> '' AND current_setting('jobprocessor.workflow_resolving', true) IS DISTINCT FROM 'on' THEN
        PERFORM set_config('jobprocessor.workflow_ended', '', true);
        PERFORM jobs_workflow_resolve(string_to_array(v_ended, ',')::bigint[]);
    END IF;
    RETURN NULL;
END
$fn$;

-- Statement: jobs deleted (cleanup's batches, or by hand). Their steps, their edges as a child and their callback
-- row go with them; those others waited for that had not ended yet resolve their children like a cancel would.
CREATE OR REPLACE FUNCTION jobs_workflow_after_delete() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $fn$
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
$fn$;

CREATE OR REPLACE TRIGGER jobs_workflow_on_end
    AFTER UPDATE ON jobs
    FOR EACH ROW
    WHEN (NEW.has_dependents AND NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION jobs_workflow_note_end();

CREATE OR REPLACE TRIGGER jobs_workflow_after_update
    AFTER UPDATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_workflow_after_update();

CREATE OR REPLACE TRIGGER jobs_workflow_after_delete
    AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_workflow_after_delete();

RESET lock_timeout;
RESET statement_timeout;
