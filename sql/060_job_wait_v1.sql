-- Why is this job waiting? jobs_wait_reasons(job_id, handler_types), v1 (issue 11): the one function behind
-- GET /jobs/<id>/wait, `flask jobs wait <id>` and the dashboard (jobprocessor/flow/wait.py calls it). Applied by
-- Alembic revision 0016_flow_control and runnable by hand (after 027 and 030):
--   psql -v ON_ERROR_STOP=1 -f sql/060_job_wait_v1.sql
-- Idempotent (CREATE OR REPLACE). Locks: none (it creates a function; the function only reads). Never edit this
-- file once released: add a _v2 file instead.
--
-- One row per reason, in this order, each (code, message, until -- when it ends, if known --, details):
--   leased                 a running job: claimed by a call (locked_by) until locked_until; started or not yet
--   parents                a workflow child (status waiting): the parents it still waits for
--   no_handler             pending, of a type none of handler_types (the caller's registered types; NULL: not asked)
--   paused                 pending, and a pause covers it (its type, its store, or that type of its store): one row
--                          per pause, details.pause_id
--   limiter_hold           the shared OpenAI limiter rescheduled it (rate_limiter_waits) until `until`
--   token_quota            its store's OpenAI token quota had no room for its type (job_store_quota_holds)
--   backoff                its run_at is ahead and it has run or been put off before (a retry's backoff, RetryLater)
--   not_due                its run_at is ahead, otherwise
--   store_running_limit    its store (or its type at its store) has max_running jobs running (live leases)
--   store_rate_limit       its store (or its type at its store) was given max_starts_per_minute jobs in the last
--                          minute; `until`: when the window frees a slot
--   behind_higher_priority due, and due jobs of a more urgent priority wait (priority is global): details.jobs_ahead
--                          (counted up to 10,000)
--   waiting_for_turn       due, and the claim's order puts it after details.stores_ahead stores at its priority
--                          (counted up to 1,000) and details.jobs_ahead_in_store of its store's own jobs: what the
--                          next calls serve first, round after round
-- The last two only when nothing above blocks it (a job that is due, of a type handled here, not paused, within
-- its store's limits). A due job first in line gets waiting_for_turn with 0 stores and 0 jobs ahead: the next claim
-- takes it. A workflow child in status waiting has the one reason parents (details.waits_for, details.parent_ids:
-- the first 20 of those not ended yet). A job in another status (completed, failed, cancelled) has no reason.
-- The figures are a reading of now, without locks: a claim running meanwhile may already have taken the job.

SET lock_timeout = '10s';
SET statement_timeout = '60s';

CREATE OR REPLACE FUNCTION jobs_wait_reasons(p_job_id bigint, p_handler_types text[] DEFAULT NULL)
RETURNS TABLE (code text, message text, until timestamptz, details jsonb)
LANGUAGE plpgsql STABLE
AS $fn$
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
$fn$;

RESET lock_timeout;
RESET statement_timeout;
