-- Archive table and the batched cleanup function (issue 5), v1. Applied by Alembic revision 0005 and runnable by
-- hand:  psql -v ON_ERROR_STOP=1 -f sql/051_jobs_archive_cleanup_v1.sql
-- Idempotent: CREATE ... IF NOT EXISTS and CREATE OR REPLACE. Never edit this file once released: add a _v2 file.
SET lock_timeout = '10s';
SET statement_timeout = '60s';

-- Completed jobs older than the retention move here (cleanup_old_jobs). Same columns as jobs plus archived_at;
-- no CHECKs, defaults or secondary indexes: rows arrive already valid and are only read by hand. The idempotency
-- key is not unique here: once a job is archived its key may be used again (the dedup window is the retention).
-- A column added to jobs later needs a _v2 file that adds it here and to the function's column lists.
CREATE TABLE IF NOT EXISTS jobs_archive (
    id              bigint      PRIMARY KEY,
    type            text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL,
    priority        smallint    NOT NULL,
    store_id        text,
    user_id         text,
    run_at          timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    completed_at    timestamptz,
    attempts        integer     NOT NULL,
    max_attempts    integer     NOT NULL,
    last_error      text,
    result          jsonb,
    locked_by       text,
    locked_until    timestamptz,
    idempotency_key text,
    batch_id        text,
    archived_at     timestamptz NOT NULL DEFAULT now()
);

-- cleanup_old_jobs(completed_older_than, failed_older_than, batch_size, max_batches)
--   moves completed jobs that finished before now() - completed_older_than into jobs_archive, and deletes failed
--   and cancelled jobs that finished before now() - failed_older_than, batch_size rows of each per batch, oldest
--   first, until none is left or max_batches batches are done (NULL: no limit). Returns one row:
--   archived, deleted (rows), batches (done), done (true when the last batch found fewer rows than batch_size, so
--   nothing older is left).
-- A function runs inside its caller's transaction: called once with max_batches NULL, all batches commit together.
-- The maintenance path (system.cleanup, `flask jobs cleanup`) calls it with max_batches => 1, one short transaction
-- with its own statement_timeout per batch, so locks and WAL stay small and claims never wait on it.
-- Rows are taken FOR UPDATE SKIP LOCKED: a row another transaction holds is left for the next run, never waited on.
-- No VACUUM here: VACUUM cannot run inside a transaction, hence not in a function. Autovacuum, tuned for this table
-- by sql/054_jobs_storage_v1.sql, reclaims the space (see sql/README.md).
CREATE OR REPLACE FUNCTION cleanup_old_jobs(
    completed_older_than interval DEFAULT '30 days',
    failed_older_than interval DEFAULT '90 days',
    batch_size integer DEFAULT 10000,
    max_batches integer DEFAULT NULL
) RETURNS TABLE (archived bigint, deleted bigint, batches integer, done boolean)
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

COMMENT ON FUNCTION cleanup_old_jobs(interval, interval, integer, integer) IS
    'Moves old completed jobs to jobs_archive and deletes old failed/cancelled ones in batches; returns counts. '
    'See sql/README.md.';

RESET lock_timeout;
RESET statement_timeout;
