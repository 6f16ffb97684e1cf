"""A test-only audit trail of job status changes, written by a trigger, so fault tests can prove what happened to
every job: each claim (-> running, with the claiming call's token), each start of a run (attempts + 1, status
unchanged), each outcome and each lease rescue.

Used by the fault tests (tests/e2e/test_faults.py) and the soak (tests/chaos/soak.py). Never part of the
product schema: install() adds it to a test database, uninstall() removes it.
"""
from __future__ import annotations

import pytest
from sqlalchemy import text

INSTALL = """
CREATE TABLE IF NOT EXISTS job_transitions (
    job_id bigint NOT NULL,
    old_status text NOT NULL,
    new_status text NOT NULL,
    old_locked_by text,
    new_locked_by text,
    old_locked_until timestamptz,
    old_attempts int NOT NULL,
    attempts int NOT NULL,
    max_attempts int NOT NULL,
    rescue boolean NOT NULL,
    gave_back boolean NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION log_job_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_transitions (job_id, old_status, new_status, old_locked_by, new_locked_by, old_locked_until,
                                 old_attempts, attempts, max_attempts, rescue, gave_back)
    VALUES (NEW.id, OLD.status, NEW.status, OLD.locked_by, NEW.locked_by, OLD.locked_until, OLD.attempts,
            NEW.attempts, NEW.max_attempts,
            -- a rescue: a started job's expired lease (its last_error says so), or an unstarted one's (it goes
            -- back as it was, after its lease ended)
            coalesce(OLD.status = 'running' AND NEW.status <> 'running'
                     AND ((NEW.last_error LIKE 'lease expired:%' AND NEW.last_error IS DISTINCT FROM OLD.last_error)
                          OR (OLD.started_at IS NULL AND OLD.locked_until < now())), false),
            NEW.attempts < OLD.attempts);
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS job_transitions_log ON jobs;
CREATE TRIGGER job_transitions_log AFTER UPDATE OF status, attempts ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.attempts IS DISTINCT FROM NEW.attempts)
    EXECUTE FUNCTION log_job_transition();
"""

UNINSTALL = """
DROP TRIGGER IF EXISTS job_transitions_log ON jobs;
DROP FUNCTION IF EXISTS log_job_transition();
DROP TABLE IF EXISTS job_transitions;
"""


def _run_script(engine, sql: str) -> None:
    with engine.begin() as conn:  # the DBAPI cursor without parameters: the % in LIKE patterns stays literal
        conn.connection.cursor().execute(sql)


def install(engine) -> None:
    _run_script(engine, INSTALL)


def uninstall(engine) -> None:
    _run_script(engine, UNINSTALL)


def truncate(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE job_transitions"))


# Every invariant the fault tests and the soak assert, as one query each returning the offending job ids (or rows).
VIOLATIONS = {
    # a job completed more than once (a second run overwrote a finished job)
    "completed_twice": """
        SELECT job_id FROM job_transitions WHERE new_status = 'completed' GROUP BY job_id HAVING count(*) > 1""",
    # a job changed after it was final (ran, or was claimed, after completed/failed)
    "changed_after_final": """
        SELECT t.job_id FROM job_transitions t
        JOIN job_transitions f ON f.job_id = t.job_id AND f.new_status IN ('completed', 'failed') AND t.at > f.at
        WHERE t.old_status <> 'cancelled'""",
    # attempts counts runs started: every start adds one (queries.START, or the claim itself for a quick type),
    # RetryLater or a budget cut gives its one back; a claim of anything else spends nothing
    "attempts_not_starts": """
        SELECT j.id FROM jobs j
        LEFT JOIN (SELECT job_id,
                          count(*) FILTER (WHERE new_status = 'running' AND attempts = old_attempts + 1) AS starts,
                          count(*) FILTER (WHERE gave_back) AS given_back
                   FROM job_transitions GROUP BY job_id) c ON c.job_id = j.id
        WHERE j.attempts <> coalesce(c.starts, 0) - coalesce(c.given_back, 0)""",
    # a run started twice under one lease
    "started_twice_in_one_lease": """
        SELECT job_id FROM job_transitions
        WHERE new_status = 'running' AND attempts > old_attempts
        GROUP BY job_id, new_locked_by HAVING count(*) > 1""",
    "over_max_attempts": "SELECT id FROM jobs WHERE attempts > max_attempts",
    # a lease rescued before it had run out
    "rescued_early": "SELECT job_id FROM job_transitions WHERE rescue AND at < old_locked_until",
    # two claims of one job overlapping: a claim while the previous one still held the job
    "claimed_while_held": """
        SELECT t.job_id FROM job_transitions t
        WHERE t.new_status = 'running' AND t.old_status NOT IN ('pending', 'running')""",
    # still running after its lease: nobody will finish it and nobody rescued it
    "stuck_running": "SELECT id FROM jobs WHERE status = 'running' AND locked_until < now() - interval '1 second'",
    # an execution (job_executions row) started after the job was final
    "ran_after_final": """
        SELECT e.job_id FROM job_executions e
        JOIN job_transitions f ON f.job_id = e.job_id AND f.new_status IN ('completed', 'failed') AND e.at > f.at""",
}


def violations(engine) -> dict[str, list]:
    """{name: [job ids]} for every invariant broken (empty dict: all hold)."""
    found = {}
    with engine.connect() as conn:
        for name, sql in VIOLATIONS.items():
            rows = [row[0] for row in conn.execute(text(sql))]
            if rows:
                found[name] = sorted(set(rows))[:20]
    return found


def claims_by_worker(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT new_locked_by, count(*) FROM job_transitions WHERE new_status = 'running' "
            "AND old_status <> 'running' GROUP BY 1")).all())


def starts_by_worker(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT new_locked_by, count(*) FROM job_transitions WHERE new_status = 'running' "
            "AND attempts = old_attempts + 1 GROUP BY 1")).all())


def outcomes_by_worker(engine) -> dict[tuple[str, str], int]:
    """(worker token, new status) -> how many outcomes that call wrote (rescues excluded)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT old_locked_by, new_status, count(*) FROM job_transitions "
            "WHERE old_status = 'running' AND new_status <> 'running' AND NOT rescue GROUP BY 1, 2")).all()
    return {(worker, status): n for worker, status, n in rows}


def rescues(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM job_transitions WHERE rescue")).scalar_one()


# --- fixtures (import both into a test module: `from tests.support.transitions import audit_trail, audited`) -------

@pytest.fixture(scope="module")
def audit_trail(raw_engine):
    install(raw_engine)
    yield raw_engine
    uninstall(raw_engine)


@pytest.fixture
def audited(audit_trail, clean_db):
    """The audit trail, emptied before the test; the test fails after it if any transition broke a rule."""
    truncate(clean_db)
    yield clean_db
    assert violations(clean_db) == {}
