"""Bulk retry and cancel (jobprocessor/bulk/): the filter (pure), the batched SQL against a real PostgreSQL, the
action log, POST /jobs/bulk and `flask jobs retry|cancel`."""
from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings, strategies as st
from sqlalchemy import text

from jobprocessor import bulk
from jobprocessor.bulk.actions import GROUP_OF
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import AUTH


def _failed(engine, n, type="'test.echo'", **columns):
    values = dict(status="'failed'", completed_at="now()", attempts="3",
                  last_error="'ValueError: product ' || g || ' not found'")
    values.update(columns)
    return insert_jobs(engine, n, job_type=type.strip("'"), **values)


# --- the filter, pure --------------------------------------------------------------------------------------------

def test_an_action_applies_only_to_the_statuses_it_can_change():
    assert bulk.parse_filter("retry", {}).statuses == ("failed", "cancelled")
    assert bulk.parse_filter("retry", {"status": "failed"}).statuses == ("failed",)
    assert bulk.parse_filter("cancel", None).statuses == ("pending",)
    for action, status in (("retry", "pending"), ("retry", "completed"), ("cancel", "failed"), ("cancel", "x")):
        with pytest.raises(bulk.BulkError) as caught:
            bulk.parse_filter(action, {"status": status})
        assert caught.value.field == "status"


@pytest.mark.parametrize("body,field", [
    (None, "body"), ([], "body"), ({"action": "delete"}, "action"), ({"action": "retry", "extra": 1}, "extra"),
    ({"action": "retry", "dry_run": "yes"}, "dry_run"), ({"action": "retry", "filter": []}, "filter"),
    ({"action": "retry", "filter": {"colour": "red"}}, "colour"),
    ({"action": "retry", "filter": {"type": 5}}, "type"), ({"action": "retry", "filter": {"type": "x" * 201}}, "type"),
    ({"action": "retry", "filter": {"store_id": "a\x00b"}}, "store_id"),
    ({"action": "retry", "filter": {"created_after": "yesterday"}}, "created_after"),
    ({"action": "retry", "filter": {"created_before": "0001-01-01T00:00:00Z"}}, "created_before"),
])
def test_a_bad_request_names_its_field(body, field):
    with pytest.raises(bulk.BulkError) as caught:
        bulk.parse_request(body)
    assert caught.value.field == field and caught.value.message


def test_times_without_an_offset_are_utc_and_the_filter_reads_back():
    request = bulk.parse_request({"action": "retry", "dry_run": True, "filter": {
        "type": "t", "created_after": "2026-01-31T09:30:00", "error_contains": "50%_off"}})
    assert request.dry_run and request.filter.as_dict() == {
        "status": ["failed", "cancelled"], "type": "t", "error_contains": "50%_off",
        "created_after": "2026-01-31T09:30:00+00:00"}
    assert request.filter.params()["error_like"] == "%50\\%\\_off%"


ERRORS = st.one_of(
    st.builds(lambda n, word, h: f"HTTPError: {n} for '{word}' id {h:x}\nTraceback ...",
              st.integers(0, 10**12), st.text(alphabet="abc xyz'", max_size=12), st.integers(0, 2**64)),
    st.text(alphabet='ab 0123456789\'"\n\tXYZ:-', max_size=60),
)


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(ERRORS, min_size=1, max_size=8))
def test_the_sql_groups_errors_as_the_python_rule_does(raw_engine, messages):
    with raw_engine.connect() as conn:
        rows = conn.execute(text(f"SELECT m, {GROUP_OF.format(column='m')} AS g FROM unnest(CAST(:ms AS text[])) "
                                 "AS u(m)"), {"ms": messages}).all()
    assert [row.g for row in rows] == [bulk.normalise_error(m) for m in messages]


# --- running it: batches, the log, what it leaves alone ------------------------------------------------------------

def _retry(**filter_):
    return bulk.parse_request({"action": "retry", "filter": filter_})


ACTOR = bulk.Actor("cli", "test")


def test_retry_in_batches_changes_exactly_the_matching_jobs_and_logs_it(engine):
    wanted = _failed(engine, 25, store_id="'s1'")
    other_store = _failed(engine, 5, store_id="'s2'")
    completed = insert_jobs(engine, 5, status="'completed'", store_id="'s1'", completed_at="now()")
    assert bulk.count_matching(engine, _retry(store_id="s1").filter) == 25
    seen = []
    result = bulk.run(engine, _retry(store_id="s1"), ACTOR, batch_size=10,
                      on_batch=lambda batches, changed: seen.append((batches, changed)))
    assert (result.matched, result.changed, result.batches) == (25, 25, 3)
    assert seen == [(1, 10), (2, 20), (3, 25)]
    retried = fetch_jobs(engine, "id = ANY(:ids)", ids=wanted)
    assert {(j["status"], j["attempts"], j["completed_at"]) for j in retried} == {("pending", 0, None)}
    assert {j["status"] for j in fetch_jobs(engine, "id = ANY(:ids)", ids=other_store)} == {"failed"}
    assert {j["status"] for j in fetch_jobs(engine, "id = ANY(:ids)", ids=completed)} == {"completed"}
    with engine.connect() as conn:
        logged = bulk.log.recent(conn)
    assert len(logged) == 1 and logged[0]["action"] == "retry" and logged[0]["status"] == "done"
    first = logged[0]
    assert (first["actor"], first["role"], first["matched"], first["changed"]) == ("cli", "test", 25, 25)
    assert logged[0]["filter"] == {"status": ["failed", "cancelled"], "store_id": "s1"}


def test_each_batch_commits_on_its_own(engine):
    """A batch's jobs and the log's running count are visible to others before the next batch starts."""
    _failed(engine, 30)
    observed = []

    def look(batches, changed):
        with engine.connect() as other:
            pending = other.execute(text("SELECT count(*) FROM jobs WHERE status = 'pending'")).scalar_one()
            logged = other.execute(text("SELECT changed FROM job_actions")).scalar_one()
        observed.append((pending, logged))

    bulk.run(engine, _retry(), ACTOR, batch_size=10, on_batch=look)
    assert observed[:3] == [(10, 10), (20, 20), (30, 30)]
    assert observed[3:] == [(30, 30)]  # a full last batch: one more, empty, finds nothing below it


def test_a_row_someone_holds_is_skipped_not_waited_for(engine):
    """A claim, a finish or the cleanup holding a row never makes the action wait (and so never makes anyone wait
    behind it): the held job is left as it is."""
    ids = _failed(engine, 20)
    held = ids[7]
    with engine.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": held})
        done = {}
        worker = threading.Thread(target=lambda: done.update(r=bulk.run(engine, _retry(), ACTOR, batch_size=5)))
        worker.start()
        worker.join(20)
        waited = worker.is_alive()
        holder.rollback()  # (lets a waiting action finish either way)
        worker.join(20)
        assert not waited, "the bulk action waited for a row lock"
    assert done["r"].changed == 19
    assert fetch_jobs(engine, "id = :id", id=held)[0]["status"] == "failed"


def test_jobs_that_arrive_or_change_meanwhile_are_judged_as_they_are_then(engine):
    ids = _failed(engine, 20)
    late = []

    def meanwhile(batches, changed):
        if batches == 1:
            late.extend(_failed(engine, 3))  # created after the action started: left alone
            with engine.begin() as conn:  # retried by hand meanwhile: no longer matches, not touched again
                conn.execute(text("UPDATE jobs SET status = 'completed' WHERE id = :id"), {"id": ids[0]})

    result = bulk.run(engine, _retry(), ACTOR, batch_size=10, on_batch=meanwhile)
    assert result.matched == 20 and result.changed == 19
    assert {j["status"] for j in fetch_jobs(engine, "id = ANY(:ids)", ids=late)} == {"failed"}
    assert fetch_jobs(engine, "id = :id", id=ids[0])[0]["status"] == "completed"


def test_every_filter_field_narrows(engine):
    _failed(engine, 4, type="'test.fail'", batch_id="'b1'")
    _failed(engine, 3, type="'test.fail'", last_error="'TimeoutError: shop 42 took too long'")
    _failed(engine, 2, created_at="now() - interval '3 days'")
    insert_jobs(engine, 6, store_id="'s9'")  # pending
    count = lambda action, **f: bulk.count_matching(engine, bulk.parse_filter(action, f))  # noqa: E731
    assert count("retry") == 9
    assert count("retry", type="test.fail") == 7
    assert count("retry", batch_id="b1") == 4
    assert count("retry", error_contains="timeouterror") == 3  # case-insensitive
    assert count("retry", error_contains="%") == 0  # a literal, not a pattern
    assert count("retry", error_group="TimeoutError: shop N took too long") == 3
    assert count("retry", created_before="2026-01-01T00:00:00Z") == 0
    assert count("retry", created_after=_iso(engine, "now() - interval '1 day'")) == 7
    assert count("cancel", store_id="s9") == 6


def _iso(engine, expression):
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT {expression}")).scalar_one().isoformat()


def test_cancel_leaves_running_jobs_to_their_handlers(engine):
    pending = insert_jobs(engine, 4)
    running = insert_jobs(engine, 2, status="'running'", locked_by="'w'", locked_until="now() + interval '1 min'")
    result = bulk.run(engine, bulk.parse_request({"action": "cancel"}), ACTOR)
    assert result.changed == 4
    assert {j["status"] for j in fetch_jobs(engine, "id = ANY(:ids)", ids=pending)} == {"cancelled"}
    assert {j["status"] for j in fetch_jobs(engine, "id = ANY(:ids)", ids=running)} == {"running"}


def test_retried_jobs_run_again(app, engine):
    from jobprocessor.processor import process_pending

    _failed(engine, 6, type="'test.echo'")
    bulk.run(engine, _retry(type="test.echo"), ACTOR)
    summary = process_pending(engine, app.extensions["jobprocessor"].settings, limit=100, budget_s=20, app=app)
    assert summary.succeeded == 6


# --- POST /jobs/bulk -----------------------------------------------------------------------------------------------

def test_the_api_counts_on_a_dry_run_and_acts_otherwise(client, engine):
    _failed(engine, 12, type="'test.fail'")
    _failed(engine, 3)
    dry = client.post("/jobs/bulk", headers=AUTH, json={"action": "retry", "filter": {"type": "test.fail",
                                                                                        "status": "failed"},
                                                          "dry_run": True})
    assert dry.status_code == 200 and dry.json["matched"] == 12 and "changed" not in dry.json
    assert bulk.count_matching(engine, bulk.parse_filter("retry", {})) == 15  # the dry run changed nothing
    done = client.post("/jobs/bulk", headers=AUTH, json={"action": "retry", "filter": {"type": "test.fail"}})
    assert done.status_code == 200 and done.json["changed"] == 12 and done.json["action_id"]
    with engine.connect() as conn:
        logged = bulk.log.recent(conn)
    assert [(a["actor"], a["role"], a["changed"]) for a in logged] == [("api", "cron_secret", 12)]


def test_the_api_refuses_bad_requests_with_the_field_and_needs_the_secret(client):
    assert client.post("/jobs/bulk", json={"action": "retry"}).status_code == 401
    bad = client.post("/jobs/bulk", headers=AUTH, json={"action": "retry", "filter": {"status": "completed"}})
    assert bad.status_code == 400 and bad.json["error"] == "invalid_field" and bad.json["field"] == "status"
    assert client.post("/jobs/bulk", headers=AUTH, data="x", content_type="text/plain").status_code == 415
    assert client.post("/jobs/bulk", headers=AUTH).status_code == 400


# --- the CLI -------------------------------------------------------------------------------------------------------

def test_the_cli_dry_run_counts_and_the_action_changes(app, engine):
    _failed(engine, 7, type="'test.fail'")
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["jobs", "retry", "--status", "failed", "--type", "test.fail", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output.strip().splitlines()[-1])["matched"] == 7
    done = runner.invoke(args=["jobs", "retry", "--status", "failed", "--type", "test.fail"])
    assert done.exit_code == 0 and json.loads(done.output.strip().splitlines()[-1])["changed"] == 7
    bad = runner.invoke(args=["jobs", "cancel", "--status", "failed"])
    assert bad.exit_code != 0 and "--status" in bad.output
    with engine.connect() as conn:
        assert [a["actor"] for a in bulk.log.recent(conn)] == ["cli"]
