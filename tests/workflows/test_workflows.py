"""Light workflows against real PostgreSQL, one caller at a time: dependencies (by position, by id, by batch),
fan-out and fan-in, cascades with last_error naming the parent, on_parent_failure "run", batch callbacks, the
waiting status the claim never reads, every path a job can end by (finish, lease rescue, cancel, delete), singleton
and debounce keys, and GET /jobs/<id>. Concurrency (processes) is in tests/workflows/test_concurrency.py."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import event, text

from jobprocessor import queries
from jobprocessor.processor import process_pending
from jobprocessor.queries import Outcome
from tests.support.db import drain_until_idle, fetch_jobs, insert_jobs
from tests.support.plans import nested_plans
from tests.support.settings import AUTH

WORKER = "wf-test-worker"


def post(client, body, status=None):
    response = client.post("/jobs", json=body, headers=AUTH)
    if status is not None:
        assert response.status_code == status, response.json
    return response


def drain(app, engine, settings, **kwargs):
    return drain_until_idle(lambda: process_pending(engine, settings, limit=1000, budget_s=20, app=app, **kwargs),
                            idle_calls=1)


def statuses(engine, ids) -> list[str]:
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, status FROM jobs WHERE id = ANY(:ids)"), {"ids": list(ids)}).all())
    return [rows.get(i) for i in ids]


def job(engine, job_id):
    return fetch_jobs(engine, "id = :id", id=job_id)[0]


def claim(engine, limit=1000, job_type=None):
    with engine.begin() as conn:
        return queries.claim(conn, limit=limit, worker=WORKER, lease_s=300,
                             job_types=None if job_type is None else [job_type]).jobs


def finish(engine, outcomes):
    with engine.begin() as conn:
        queries.start(conn, WORKER, [o.job_id for o in outcomes])
        return queries.finish(conn, WORKER, outcomes)


def executions(engine) -> dict[int, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT job_id, count(*) FROM job_executions GROUP BY job_id")).all())


def run_order_holds(engine) -> list:
    """Children whose run started before one of their parents completed (must be empty)."""
    with engine.connect() as conn:
        return conn.execute(text("""
            SELECT c.id AS child, p.id AS parent FROM job_dependencies d
            JOIN jobs c ON c.id = d.child_id JOIN jobs p ON p.id = d.parent_id
            JOIN (SELECT job_id, min(at) AS first_run FROM job_executions GROUP BY job_id) e ON e.job_id = c.id
            WHERE p.status <> 'completed' OR e.first_run < p.completed_at""")).all()


# --- dependencies --------------------------------------------------------------------------------------------------

def test_fan_out_and_fan_in_in_one_request(app, client, engine, settings):
    """import -> 5 translate (by position) -> export (depends_on_batch of the translations): each child waits in
    its own status, becomes pending when its last parent completes, and runs after all of them, once."""
    jobs = [{"type": "wf.stage", "payload": {"stage": "import"}, "store_id": "s1"}]
    jobs += [{"type": "wf.stage", "payload": {"stage": "translate", "n": i}, "store_id": "s1",
              "batch_id": "translate-1", "depends_on": [{"index": 0}]} for i in range(5)]
    jobs += [{"type": "wf.stage", "payload": {"stage": "export"}, "store_id": "s1", "depends_on_batch": "translate-1"}]
    body = post(client, {"jobs": jobs}, 201).json
    ids = body["ids"]
    assert statuses(engine, ids) == ["pending"] + ["waiting"] * 6
    assert [job(engine, i)["waits_for"] for i in ids] == [0] + [1] * 5 + [5]
    assert [r["id"] for r in claim(engine)] == [ids[0]]  # the claim sees only the import
    finish(engine, [Outcome(ids[0], "completed", result_json="{}")])
    assert statuses(engine, ids) == ["completed"] + ["pending"] * 5 + ["waiting"]
    drain(app, engine, settings)
    assert statuses(engine, ids) == ["completed"] * 7
    assert executions(engine) == {i: 1 for i in ids[1:]}  # the import was finished by hand above
    assert run_order_holds(engine) == []


def test_depends_on_existing_ids_and_mixed_references(app, client, engine, settings):
    first = post(client, {"type": "wf.stage", "payload": {"stage": "import"}}, 201).json["id"]
    done = post(client, {"type": "wf.stage", "payload": {"stage": "done-before"}}, 201).json["id"]
    drain(app, engine, settings)
    assert statuses(engine, [first, done]) == ["completed", "completed"]
    later = post(client, {"type": "wf.stage", "payload": {"stage": "later"}}, 201).json["id"]
    body = post(client, {"jobs": [
        {"type": "wf.stage", "payload": {"stage": "a"}, "depends_on": [first, done]},  # both completed: pending now
        {"type": "wf.stage", "payload": {"stage": "b"}, "depends_on": [later, {"index": 0}]},
    ]}, 201).json
    a, b = body["ids"]
    assert statuses(engine, [a, b]) == ["pending", "waiting"]
    assert job(engine, b)["waits_for"] == 2
    drain(app, engine, settings)
    assert statuses(engine, [a, b, later]) == ["completed"] * 3
    assert run_order_holds(engine) == []
    detail = client.get(f"/jobs/{b}", headers=AUTH).json
    assert [(p["id"], p["status"], p["resolved"]) for p in detail["parents"]] == [(later, "completed", True),
                                                                                   (a, "completed", True)]
    assert detail["parents_total"] == 2 and detail["waits_for"] == 0 and detail["on_parent_failure"] == "cancel"
    assert client.get(f"/jobs/{a}", headers=AUTH).json["children"] == [{"id": b, "type": "wf.stage",
                                                                        "status": "completed"}]


def test_a_failed_parent_cancels_its_waiting_descendants_naming_it(app, client, engine, settings):
    body = post(client, {"jobs": [
        {"type": "wf.stage", "payload": {"stage": "import", "fail": True}},
        {"type": "wf.stage", "payload": {"stage": "translate"}, "depends_on": [{"index": 0}]},
        {"type": "wf.stage", "payload": {"stage": "export"}, "depends_on": [{"index": 1}]},
        {"type": "wf.stage", "payload": {"stage": "report"}, "depends_on": [{"index": 0}], "on_parent_failure": "run"},
        {"type": "wf.stage", "payload": {"stage": "unrelated"}},
    ]}, 201).json
    root, translate, export, report, unrelated = body["ids"]
    drain(app, engine, settings)
    assert statuses(engine, body["ids"]) == ["failed", "cancelled", "cancelled", "completed", "completed"]
    assert job(engine, translate)["last_error"] == f"cancelled: parent job {root} failed"
    assert job(engine, export)["last_error"] == f"cancelled: parent job {translate} was cancelled"
    assert job(engine, export)["completed_at"] is not None
    assert set(executions(engine)) == {root, report, unrelated}  # the cancelled ones never ran


def test_a_long_chain_is_cancelled_in_one_statement_without_recursion(client, engine):
    """A pipeline of 600 jobs, each waiting for the one before: its head's failure cancels all of them in the FINISH
    statement (level by level in one call of the resolution, not one nested trigger call per level: that would run
    out of stack, and the statement -- a finish, or the claim whose rescue failed the head -- would fail for good)."""
    head = insert_jobs(engine, 1)[0]
    ids = post(client, {"jobs": [{"type": "wf.stage", "depends_on": [head]}] + [
        {"type": "wf.stage", "depends_on": [{"index": i}]} for i in range(599)]}, 201).json["ids"]
    claim(engine)
    finish(engine, [Outcome(head, "failed", error="boom")])
    assert set(statuses(engine, ids)) == {"cancelled"}
    assert job(engine, ids[-1])["last_error"] == f"cancelled: parent job {ids[-2]} was cancelled"


def test_a_child_of_parents_that_already_ended_settles_at_enqueue(client, engine):
    ids = insert_jobs(engine, 3, status="CASE g WHEN 1 THEN 'completed' WHEN 2 THEN 'failed' ELSE 'cancelled' END",
                      completed_at="now()")
    completed, failed, cancelled = ids
    body = post(client, {"jobs": [
        {"type": "wf.stage", "depends_on": [completed]},
        {"type": "wf.stage", "depends_on": [completed, failed]},
        {"type": "wf.stage", "depends_on": [cancelled], "on_parent_failure": "run"},
        {"type": "wf.stage", "depends_on": [{"index": 1}]},  # its parent is cancelled at enqueue: so is it
    ]}, 201).json
    assert statuses(engine, body["ids"]) == ["pending", "cancelled", "pending", "cancelled"]
    assert job(engine, body["ids"][1])["last_error"] == f"cancelled: parent job {failed} failed"
    assert job(engine, body["ids"][3])["last_error"] == f"cancelled: parent job {body['ids'][1]} was cancelled"


def test_a_parent_in_the_request_that_is_a_repeat_stands_for_the_existing_job(client, engine):
    """An idempotent repeat (or an existing singleton) referenced by position: the child waits for the existing job,
    counted once even when it also names that job by id."""
    first = post(client, {"type": "wf.stage", "idempotency_key": "import-1"}, 201).json["id"]
    single = post(client, {"type": "wf.stage", "singleton_key": "sync-1"}, 201).json["id"]
    body = post(client, {"jobs": [
        {"type": "wf.stage", "idempotency_key": "import-1"},
        {"type": "wf.stage", "singleton_key": "sync-1"},
        {"type": "wf.stage", "depends_on": [{"index": 0}, first]},
        {"type": "wf.stage", "depends_on": [{"index": 1}, {"index": 0}]},
    ]}, 201).json
    assert body["ids"][:2] == [first, single] and [j["created"] for j in body["jobs"]] == [False, False, True, True]
    a, b = body["ids"][2:]
    assert [job(engine, a)["waits_for"], job(engine, b)["waits_for"]] == [1, 2]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT has_dependents FROM jobs WHERE id = ANY(:ids)"),
                            {"ids": [first, single]}).scalars().all() == [True, True]
    claim(engine)
    finish(engine, [Outcome(first, "completed", result_json="{}")])
    assert statuses(engine, [a, b]) == ["pending", "waiting"]
    finish(engine, [Outcome(single, "completed", result_json="{}")])
    assert statuses(engine, [b]) == ["pending"]


def test_the_claim_never_reads_waiting_jobs(client, engine):
    """Waiting jobs are not pending: with 300 of them due and nothing pending, a claim claims nothing, and none of
    its plans (the fair claim function's own statements included) reads anything but the pending-only indexes."""
    parent = insert_jobs(engine, 1, status="'running'", locked_by="'elsewhere'",
                         locked_until="now() + interval '1 hour'")[0]
    post(client, {"jobs": [{"type": "wf.stage", "depends_on": [parent], "store_id": f"s{i % 30}",
                            "run_at": "2020-01-01T00:00:00Z"} for i in range(300)]}, 201)
    assert claim(engine) == []
    assert claim(engine, job_type="wf.stage") == []
    statements = []

    def record(conn, cursor, statement, parameters, *args):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        claim(engine)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    statement, parameters = next((s, p) for s, p in statements if "jobs_fair_claim" in s)
    plans = nested_plans(engine, statement, parameters)
    assert "jobs_waiting_idx" not in plans and "Seq Scan on jobs" not in plans
    # (a bitmap heap scan is judged by the index its bitmap index scans read: the planner picks one or the other for
    # the claim's read by primary key, from the table's statistics)
    scans_of_jobs = [line for line in plans.splitlines()
                     if " on jobs " in line and "Scan" in line and "Bitmap Heap Scan" not in line
                     or "Bitmap Index Scan on jobs_" in line]
    assert scans_of_jobs and all(any(index in line for index in ("jobs_fair_idx", "jobs_running_lease_idx",
                                                                 "jobs_pkey")) for line in scans_of_jobs), plans


def test_listings_read_waiting_jobs_through_their_index(client, engine):
    """GET /jobs?status=waiting reads jobs_waiting_idx; a listing without a status reads it beside both halves of the
    dashboard indexes (a BitmapOr), so a store's waiting jobs are listed without a scan of the table."""
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO jobs (type, status, store_id, user_id, completed_at, waits_for, on_parent_failure)
            SELECT 'type-' || (g % 5),
                   (ARRAY['pending', 'running', 'completed', 'failed', 'cancelled', 'waiting'])[1 + g % 6],
                   's' || (g % 200), 'u' || (g % 50), CASE WHEN g % 6 IN (2, 3, 4) THEN now() END,
                   CASE WHEN g % 6 = 5 THEN 1 ELSE 0 END, CASE WHEN g % 6 = 5 THEN 'cancel' END
            FROM generate_series(1, 20000) AS g"""))
        conn.execute(text("ANALYZE jobs"))
    from tests.support.plans import LIST_PARAMS, plan

    assert "jobs_waiting_idx" in plan(engine, queries.LIST_JOBS, {**LIST_PARAMS, "status": "waiting"})
    no_status = plan(engine, queries.LIST_JOBS, {**LIST_PARAMS, "store_id": "s1"})
    assert "jobs_waiting_idx" in no_status and "jobs_store_status_live_idx" in no_status, no_status
    body = client.get("/jobs?store_id=s5&limit=500", headers=AUTH).json
    assert {j["status"] for j in body["jobs"]} == {"waiting", "running", "failed"}  # g % 200 = 5: g % 6 odd
    assert len(body["jobs"]) == 100
    assert "jobs_waiting_idx" in plan(engine, "SELECT * FROM job_queue_health")


def test_every_path_that_ends_a_parent_resolves_its_children(client, engine):
    """A lease rescue that fails the parent (its last attempt), a manual cancel of a pending or waiting parent, a
    bulk UPDATE, a DELETE of a parent that had not ended: each resolves the children in the same statement."""
    # the rescue: a running parent on its last attempt whose lease ran out
    rescued = insert_jobs(engine, 1, status="'running'", attempts="1", max_attempts="1", started_at="now()",
                          locked_by="'dead'", locked_until="now() - interval '1 second'")[0]
    pending = insert_jobs(engine, 1)[0]
    bulk = insert_jobs(engine, 2)
    deleted = insert_jobs(engine, 1)[0]
    body = post(client, {"jobs": [
        {"type": "wf.stage", "depends_on": [rescued]},
        {"type": "wf.stage", "depends_on": [pending]},
        {"type": "wf.stage", "depends_on": [{"index": 1}]},  # waiting on a waiting job
        {"type": "wf.stage", "depends_on": bulk},
        {"type": "wf.stage", "depends_on": [deleted], "on_parent_failure": "run"},
    ]}, 201).json
    after_rescue, after_cancel, grandchild, after_bulk, after_delete = body["ids"]
    with engine.begin() as conn:  # a claim's rescue fails the parent: its last attempt was spent
        queries.claim(conn, limit=0, worker=WORKER, lease_s=60)
    assert statuses(engine, [rescued, after_rescue]) == ["failed", "cancelled"]
    assert "lease expired" not in job(engine, after_rescue)["last_error"]
    assert job(engine, after_rescue)["last_error"] == f"cancelled: parent job {rescued} failed"
    assert client.post(f"/jobs/{pending}/cancel", headers=AUTH).status_code == 200
    assert statuses(engine, [after_cancel, grandchild]) == ["cancelled", "cancelled"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'completed', completed_at = now() WHERE id = ANY(:ids)"),
                     {"ids": bulk})
    assert statuses(engine, [after_bulk]) == ["pending"]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": deleted})
    assert statuses(engine, [after_delete]) == ["pending"]  # on_parent_failure run: it runs anyway
    detail = client.get(f"/jobs/{after_delete}", headers=AUTH).json
    assert detail["parents"] == [{"id": deleted, "type": None, "status": None, "resolved": True}]


def test_a_waiting_job_can_be_cancelled_and_its_children_follow(client, engine):
    parent = insert_jobs(engine, 1)[0]
    body = post(client, {"jobs": [{"type": "wf.stage", "depends_on": [parent]},
                                  {"type": "wf.stage", "depends_on": [{"index": 0}]}]}, 201).json
    response = client.post(f"/jobs/{body['ids'][0]}/cancel", headers=AUTH)
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    assert statuses(engine, body["ids"]) == ["cancelled", "cancelled"]
    running = insert_jobs(engine, 1, status="'running'")[0]
    assert client.post(f"/jobs/{running}/cancel", headers=AUTH).status_code == 409


def test_a_retried_parent_that_ends_again_counts_once(client, engine):
    """An edge resolves once: a run-policy child of a parent that failed, was retried by hand and completes,
    still waits for its other parent."""
    first, second = insert_jobs(engine, 2)
    child = post(client, {"type": "wf.stage", "depends_on": [first, second], "on_parent_failure": "run"},
                 201).json["id"]
    claimed = claim(engine)
    finish(engine, [Outcome(first, "failed", error="boom")])
    assert job(engine, child)["waits_for"] == 1
    assert client.post(f"/jobs/{first}/retry", headers=AUTH).status_code == 200
    assert len(claimed) == 2
    with engine.begin() as conn:  # the retried parent runs again and completes
        conn.execute(text("UPDATE jobs SET status = 'completed', completed_at = now() WHERE id = :id"),
                     {"id": first})
    assert statuses(engine, [child]) == ["waiting"] and job(engine, child)["waits_for"] == 1
    finish(engine, [Outcome(second, "completed", result_json="{}")])
    assert statuses(engine, [child]) == ["pending"]


def test_completing_a_parent_with_1000_waiting_children_is_one_statement(client, engine):
    parent = insert_jobs(engine, 1, store_id="'s1'")[0]
    body = post(client, {"jobs": [{"type": "wf.stage", "depends_on": [parent], "store_id": f"s{i % 40}"}
                                  for i in range(1000)]}, 201).json
    claim(engine)
    statements = []

    def record(conn, cursor, statement, parameters, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        finish(engine, [Outcome(parent, "completed", result_json="{}")])
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len([s for s in statements if "UPDATE jobs" in s]) == 2  # START and FINISH: nothing per child
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'pending' AND id = ANY(:ids)"),
                            {"ids": body["ids"]}).scalar() == 1000
    from tests.support.store_queues import uncovered

    assert uncovered(engine) == []  # 40 stores' rows cover every released child
    assert len(claim(engine)) == 1000


def test_a_child_becoming_pending_in_flight_is_not_lost_to_a_tightening_claim(client, clean_db, raw_engine):
    """The directory's race (sql/023) for the new way to become pending: a parent's FINISH releases a child of a
    store with a stale row, in a transaction not yet committed, while a claim finds the store with nothing due and
    tightens what it can. The row is held by the release (FOR KEY SHARE), so once committed the child is found."""
    from tests.support.store_queues import claim as directory_claim
    from tests.support.store_queues import finish as directory_finish
    from tests.support.store_queues import row, uncovered

    engine = clean_db
    insert_jobs(engine, 1, store_id="'a'")
    insert_jobs(engine, 1, store_id="'b'", run_at="now() - interval '1 minute'")
    served = directory_claim(engine, 2)  # both stores served: their rows look due but hold nothing now
    directory_finish(engine, [Outcome(r["id"], "failed", error="x") for r in served])
    # the parent is urgent: its claim fills its one slot at level 1 and leaves the rows of level 5 as they are
    parent = insert_jobs(engine, 1, store_id="'p'", priority="1")[0]
    child = post(client, {"type": "wf.stage", "store_id": "a", "depends_on": [parent]}, 201).json["id"]
    assert [r["id"] for r in directory_claim(engine, 1)] == [parent]
    assert not row(engine, "a").empty
    insert_jobs(engine, 1, store_id="'c'")  # something due, so the next claim reads the level's rows
    with raw_engine.connect() as finisher:
        tx = finisher.begin()
        assert queries.start(finisher, "test-worker", [parent]) == {parent}
        assert queries.finish(finisher, "test-worker", [Outcome(parent, "completed", result_json="{}")]) == {parent}
        assert finisher.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": child}).scalar() == "pending"
        # not committed: the claim finds only 'c' due, tightens 'b', and cannot tighten 'a' (held by the release)
        assert [r["store_id"] for r in directory_claim(engine, 5)] == ["c"]
        assert row(engine, "b").empty
        assert not row(engine, "a").empty
        tx.commit()
    assert uncovered(engine) == []
    assert [r["id"] for r in directory_claim(engine, 5)] == [child]


# --- batch callbacks -----------------------------------------------------------------------------------------------

def test_a_batch_callback_runs_once_with_the_batch_counts(app, client, engine, settings):
    jobs = [{"type": "wf.stage", "payload": {"stage": "optimize", "n": i, "fail": i == 2}, "batch_id": "opt-1"}
            for i in range(4)]
    body = post(client, {"jobs": jobs, "on_complete": {"type": "wf.stage", "payload": {"stage": "notify"},
                                                       "store_id": "s1"}}, 201).json
    callback = body["on_complete"]["id"]
    assert body["on_complete"]["created"] and callback not in body["ids"]
    assert statuses(engine, [callback]) == ["waiting"] and job(engine, callback)["waits_for"] == 4
    assert client.get("/batches/opt-1", headers=AUTH).json["on_complete"] == {"id": callback, "status": "waiting"}
    drain(app, engine, settings)
    notify = job(engine, callback)
    assert notify["status"] == "completed" and executions(engine)[callback] == 1
    assert notify["payload"] == {"stage": "notify", "batch": {
        "batch_id": "opt-1", "total": 4,
        "counts": {"waiting": 0, "pending": 0, "running": 0, "completed": 3, "failed": 1, "cancelled": 0}}}
    detail = client.get(f"/jobs/{callback}", headers=AUTH).json
    assert detail["on_complete_of"] == "opt-1" and detail["parents_total"] == 4
    # a second callback for the same batch is refused; a batch of mixed batch ids cannot have one
    again = post(client, {"jobs": [{"type": "wf.stage", "batch_id": "opt-1"}],
                          "on_complete": {"type": "wf.stage"}}, 409).json
    assert again["error"] == "batch_has_callback"
    mixed = post(client, {"jobs": [{"type": "wf.stage", "batch_id": "x"}, {"type": "wf.stage"}],
                          "on_complete": {"type": "wf.stage"}}, 422).json
    assert mixed["error"] == "invalid_combination"


def test_a_callback_covers_the_jobs_already_in_the_batch(client, engine):
    done = insert_jobs(engine, 2, batch_id="'b2'", status="'completed'", completed_at="now()")
    live = insert_jobs(engine, 1, batch_id="'b2'")
    body = post(client, {"jobs": [{"type": "wf.stage", "batch_id": "b2"}], "on_complete": {"type": "wf.stage"}},
                201).json
    callback = body["on_complete"]["id"]
    assert job(engine, callback)["waits_for"] == 2  # the live job and the new one; the completed ones count now
    claimed = {r["id"] for r in claim(engine)}
    assert claimed == {live[0], body["ids"][0]}
    finish(engine, [Outcome(i, "completed", result_json="{}") for i in claimed])
    callback_job = job(engine, callback)
    assert callback_job["status"] == "pending"
    assert callback_job["payload"]["batch"]["counts"]["completed"] == 4 and len(done) == 2


# --- singleton and debounce ----------------------------------------------------------------------------------------

def test_singleton_key_returns_the_unfinished_job(app, client, engine, settings):
    first = post(client, {"type": "wf.stage", "singleton_key": "sync:s1", "payload": {"n": 1}}, 201).json
    again = post(client, {"type": "wf.stage", "singleton_key": "sync:s1", "payload": {"n": 2}}, 200).json
    assert again["id"] == first["id"] and not again["created"] and again["job"]["payload"] == {"n": 1}
    batch = post(client, {"jobs": [{"type": "wf.stage", "singleton_key": "sync:s1"},
                                   {"type": "wf.stage", "singleton_key": "sync:s2"},
                                   {"type": "wf.stage", "singleton_key": "sync:s2"}]}, 201).json
    assert batch["ids"][0] == first["id"] and batch["ids"][1] == batch["ids"][2]
    assert [j["created"] for j in batch["jobs"]] == [False, True, False]
    other = post(client, {"type": "test.echo", "singleton_key": "sync:s1"}, 409).json
    assert other["error"] == "singleton_conflict"
    drain(app, engine, settings)
    # finished: the key is free again
    assert post(client, {"type": "wf.stage", "singleton_key": "sync:s1"}, 201).json["id"] != first["id"]


def test_a_failed_singleton_cannot_be_retried_while_its_key_is_taken(client, engine):
    failed = post(client, {"type": "wf.stage", "singleton_key": "k"}, 201).json["id"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'failed', completed_at = now() WHERE id = :id"), {"id": failed})
    post(client, {"type": "wf.stage", "singleton_key": "k"}, 201)
    response = client.post(f"/jobs/{failed}/retry", headers=AUTH)
    assert response.status_code == 409 and response.json["error"] == "singleton_conflict"


def test_debounce_replaces_the_waiting_job_and_moves_its_run_at(app, client, engine, settings):
    first = post(client, {"type": "wf.stage", "singleton_key": "webhook:p1", "debounce_s": 30,
                          "payload": {"v": 1}}, 201).json
    run_at = job(engine, first["id"])["run_at"]
    time.sleep(0.05)
    second = post(client, {"type": "wf.stage", "singleton_key": "webhook:p1", "debounce_s": 30,
                           "payload": {"v": 2}}, 200).json
    assert second["id"] == first["id"] and second["debounced"] and second["job"]["payload"] == {"v": 2}
    assert job(engine, first["id"])["run_at"] > run_at
    # the job of the key is running: it gives up the key, and the new event becomes a new job
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_at = now() WHERE id = :id"), {"id": first["id"]})
    assert [r["id"] for r in claim(engine)] == [first["id"]]
    third = post(client, {"type": "wf.stage", "singleton_key": "webhook:p1", "debounce_s": 0,
                          "payload": {"v": 3}}, 201).json
    assert third["id"] != first["id"] and job(engine, first["id"])["singleton_key"] is None
    assert job(engine, third["id"])["singleton_key"] == "webhook:p1"


@pytest.mark.parametrize("body,field,code", [
    ({"type": "wf.stage", "debounce_s": 5}, "debounce_s", "invalid_combination"),
    ({"type": "wf.stage", "singleton_key": "k", "debounce_s": 5, "run_at": "2030-01-01T00:00:00Z"}, "debounce_s",
     "invalid_combination"),
    ({"type": "wf.stage", "on_parent_failure": "run"}, "on_parent_failure", "invalid_combination"),
    ({"type": "wf.stage", "depends_on": [{"index": 0}]}, "jobs[0].depends_on", "invalid_reference"),
    ({"type": "wf.stage", "depends_on": [987654]}, "jobs[0].depends_on", "unknown_parent"),
    ({"type": "wf.stage", "depends_on_batch": "nothing-here"}, "jobs[0].depends_on_batch", "unknown_batch"),
    ({"type": "wf.stage", "batch_id": "b", "depends_on_batch": "b"}, "jobs[0].depends_on_batch",
     "invalid_reference"),
])
def test_workflow_fields_that_cannot_be_honoured_are_422_and_enqueue_nothing(client, engine, body, field, code):
    response = post(client, body, 422)
    assert response.json["error"] == code and response.json["field"] == field, response.json
    assert fetch_jobs(engine) == []


@pytest.mark.parametrize("body,field", [
    ({"type": "wf.stage", "depends_on": "1"}, "depends_on"),
    ({"type": "wf.stage", "depends_on": [0]}, "depends_on"),
    ({"type": "wf.stage", "depends_on": [True]}, "depends_on"),
    ({"type": "wf.stage", "depends_on": [{"index": -1}]}, "depends_on"),
    ({"type": "wf.stage", "depends_on": [{"index": 1, "x": 2}]}, "depends_on"),
    ({"type": "wf.stage", "depends_on": list(range(1, 1002))}, "depends_on"),
    ({"type": "wf.stage", "on_parent_failure": "ignore", "depends_on": [1]}, "on_parent_failure"),
    ({"type": "wf.stage", "singleton_key": ""}, "singleton_key"),
    ({"type": "wf.stage", "singleton_key": "k", "debounce_s": -1}, "debounce_s"),
    ({"type": "wf.stage", "singleton_key": "k", "debounce_s": "5"}, "debounce_s"),
])
def test_malformed_workflow_fields_are_400(client, engine, body, field):
    response = post(client, body, 400)
    assert response.json["field"] == field, response.json


def test_references_must_point_backwards_and_batches_come_first(client, engine):
    forward = post(client, {"jobs": [{"type": "wf.stage", "depends_on": [{"index": 1}]}, {"type": "wf.stage"}]},
                   422).json
    assert forward["index"] == 0 and forward["error"] == "invalid_reference"
    late = post(client, {"jobs": [{"type": "wf.stage", "depends_on_batch": "b"},
                                  {"type": "wf.stage", "batch_id": "b"}]}, 422).json
    assert late["index"] == 1 and "list a batch's jobs before" in late["message"]
    assert fetch_jobs(engine) == []


# --- steps and cleanup ---------------------------------------------------------------------------------------------

def test_cleanup_takes_steps_and_edges_with_their_jobs(client, engine):
    parent = insert_jobs(engine, 1, status="'completed'", completed_at="now() - interval '100 days'")[0]
    child = post(client, {"type": "wf.stage", "depends_on": [parent]}, 201).json["id"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'failed', completed_at = now() - interval '100 days' "
                          "WHERE id = :id"), {"id": child})
        conn.execute(text("INSERT INTO job_steps (job_id, name, result) VALUES (:id, 'a', '1'), (:p, 'a', '2')"),
                     {"id": child, "p": parent})
        conn.execute(text("SELECT * FROM cleanup_old_jobs('30 days', '90 days', 100, 1)"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_steps")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM job_dependencies")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM jobs_archive")).scalar() == 1


# --- the Python API and the CLI ------------------------------------------------------------------------------------

def test_python_enqueue_with_workflow_fields(app, engine):
    from jobprocessor.enqueue import enqueue, enqueue_batch, enqueue_many

    parent = enqueue("wf.stage", {"stage": "import"})
    child = enqueue("wf.stage", {"stage": "export"}, depends_on=[parent], on_parent_failure="run")
    assert statuses(engine, [parent, child]) == ["pending", "waiting"]
    ids = enqueue_many([{"type": "wf.stage", "batch_id": "py"}, {"type": "wf.stage", "batch_id": "py"}])
    written = enqueue_batch([{"type": "wf.stage", "batch_id": "py2"}], on_complete={"type": "wf.stage"})
    assert len(ids) == 2 and written.on_complete[1] and statuses(engine, [written.on_complete[0]]) == ["waiting"]
    assert enqueue("wf.stage", singleton_key="one") == enqueue("wf.stage", singleton_key="one")


def test_cli_enqueue_with_dependencies_and_show(app, engine):
    runner = app.test_cli_runner()
    parent = insert_jobs(engine, 1)[0]
    out = runner.invoke(args=["jobs", "enqueue", "wf.stage", "--depends-on", str(parent), "--on-parent-failure",
                              "run"])
    assert out.exit_code == 0, out.output
    import json

    child = json.loads(out.output)["first_id"]
    assert statuses(engine, [child]) == ["waiting"]
    shown = runner.invoke(args=["jobs", "show", str(child)])
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["status"] == "waiting" and body["parents"][0]["id"] == parent
    missing = runner.invoke(args=["jobs", "enqueue", "wf.stage", "--depends-on", "99999"])
    assert missing.exit_code != 0 and "does not exist" in missing.output


def test_a_bulk_retry_skips_jobs_whose_singleton_key_is_taken(client, engine):
    """Retried, a job holds its singleton_key again: one whose key an unfinished job holds stays failed (as a single
    retry answers 409), and of failed jobs sharing a free key only the newest is retried -- no unique violation."""
    failed = insert_jobs(engine, 4, status="'failed'", completed_at="now()",
                         singleton_key="CASE WHEN g <= 2 THEN 'k1' WHEN g = 3 THEN 'k2' END")
    holder = insert_jobs(engine, 1, singleton_key="'k2'")[0]
    response = client.post("/jobs/bulk", json={"action": "retry", "filter": {"status": "failed"}}, headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json["changed"] == 2
    assert statuses(engine, failed + [holder]) == ["failed", "pending", "failed", "pending", "pending"]
