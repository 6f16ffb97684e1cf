"""Workflow promises under concurrency, with real processes against real PostgreSQL:

- 8 processes finish siblings at the same moment, round after round (a barrier): every child becomes pending exactly
  once, never before its parents (checked by a ninth process in the transaction that claims it), no deadlock;
  with failures among them, children are cancelled exactly once, naming a failed parent, and run-policy children
  released exactly once;
- a batch's on_complete job is released exactly once when the batch's last jobs finish in concurrent calls, with
  the final counts;
- singleton keys under concurrent enqueues: one unfinished job per key, every process gets its id;
- debounce under a burst from 8 processes: one job, the others absorbed into it.
"""
from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.support import transitions
from tests.support.db import fetch_jobs, insert_jobs
from tests.support.settings import SECRET
from tests.support.workflow_workers import forkserver

ctx = forkserver()
FINISHERS = 8


@pytest.fixture
def audited(client, clean_db):
    """The audit trail of status changes (tests/support/transitions.py) for this test only."""
    transitions.install(clean_db)
    try:
        yield clean_db
    finally:
        transitions.uninstall(clean_db)


def post(client, body):
    response = client.post("/jobs", json=body, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code in (200, 201), response.json
    return response.json


def run_finishers(database_url, rounds, per_round, fail_ids=frozenset()):
    """8 finishers and a watcher; returns (finished counts, finisher errors, children the watcher claimed, early)."""
    from tests.support.workflow_workers import finisher, watcher

    barrier, stop, results = ctx.Barrier(FINISHERS), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=finisher, args=(database_url, rounds, per_round, set(fail_ids), barrier, results))
             for _ in range(FINISHERS)]
    watch = ctx.Process(target=watcher, args=(database_url, stop, results))
    watch.start()
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    stop.set()
    watch.join(120)
    assert [p.exitcode for p in procs + [watch]] == [0] * (FINISHERS + 1)
    out = [results.get(timeout=10) for _ in range(FINISHERS + 1)]
    finished = sum(r[1] for r in out if r[0] == "finisher")
    errors = [e for r in out if r[0] == "finisher" for e in r[2]]
    (_, claimed, early), = [r for r in out if r[0] == "watcher"]
    return finished, errors, claimed, early


def releases(engine, ids) -> dict[int, int]:
    """How often each job went from waiting to pending or cancelled (the audit trail)."""
    with engine.connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT job_id, count(*) FROM job_transitions WHERE old_status = 'waiting' AND job_id = ANY(:ids) "
            "GROUP BY job_id"), {"ids": list(ids)}).all())
    return {i: rows.get(i, 0) for i in ids}


def shared_children(client, parents):
    """Children that make concurrent finishes overlap: two fan-ins over all parents (a deadlock needs two shared
    children), ten over interleaved groups, a grandchild of the fan-ins, and run-policy twins of the groups."""
    groups = [[p for k, p in enumerate(parents) if k % 10 == g] for g in range(10)]
    jobs = [{"type": "wf.stage", "depends_on": parents}, {"type": "wf.stage", "depends_on": parents[::-1]}]
    jobs += [{"type": "wf.stage", "depends_on": group} for group in groups]
    jobs += [{"type": "wf.stage", "depends_on": [{"index": 0}, {"index": 1}]}]
    jobs += [{"type": "wf.stage", "depends_on": group, "on_parent_failure": "run"} for group in groups]
    return post(client, {"jobs": jobs})["ids"]


def test_children_start_once_and_never_before_their_parents_with_8_processes_finishing_at_once(
        client, audited, database_url):
    engine = audited
    rounds, per_round = 4, 6
    parents = insert_jobs(engine, FINISHERS * rounds * per_round, store_id="'s' || (g % 5)")
    children = shared_children(client, parents)
    finished, errors, claimed, early = run_finishers(database_url, rounds, per_round)
    assert errors == [] and finished == len(parents)
    assert early == []
    assert releases(engine, children) == {c: 1 for c in children}
    assert sorted(claimed) == sorted(children)
    assert {j["status"] for j in fetch_jobs(engine)} == {"completed"}
    assert transitions.violations(engine) == {}


def test_concurrent_failures_cancel_each_child_once_naming_a_failed_parent(client, audited, database_url):
    engine = audited
    rounds, per_round = 3, 6
    parents = insert_jobs(engine, FINISHERS * rounds * per_round, store_id="'s' || (g % 5)")
    failed = set(parents[5::7])  # in every group and round
    children = shared_children(client, parents)
    finished, errors, claimed, early = run_finishers(database_url, rounds, per_round, failed)
    assert errors == [] and finished == len(parents)
    assert early == []
    assert releases(engine, children) == {c: 1 for c in children}
    cancelled = {j["id"]: j for j in fetch_jobs(engine, "id = ANY(:ids) AND status = 'cancelled'", ids=children)}
    assert set(cancelled) == set(children[:13])  # the fan-ins, the groups, the grandchild
    for child in children[:12]:
        named = int(cancelled[child]["last_error"].split("parent job ")[1].split()[0])
        assert named in failed, cancelled[child]["last_error"]
    assert cancelled[children[12]]["last_error"].startswith("cancelled: parent job ")  # its parent was cancelled
    assert sorted(claimed) == sorted(children[13:])  # the run-policy twins ran, once each


def test_a_batch_callback_is_released_once_when_its_last_jobs_finish_in_concurrent_calls(
        client, audited, database_url):
    engine = audited
    rounds, per_round = 2, 8  # each round finishes one batch of 64 jobs in 8 concurrent calls
    callbacks = []
    for b in range(rounds):
        body = post(client, {"jobs": [{"type": "test.echo", "batch_id": f"cb-{b}"}
                                      for _ in range(FINISHERS * per_round)],
                             "on_complete": {"type": "wf.stage", "payload": {"batch": b}}})
        callbacks.append(body["on_complete"]["id"])
    finished, errors, claimed, early = run_finishers(database_url, rounds, per_round)
    assert errors == [] and finished == rounds * FINISHERS * per_round and early == []
    assert releases(engine, callbacks) == {c: 1 for c in callbacks}
    assert sorted(claimed) == sorted(callbacks)
    for b, callback in enumerate(callbacks):
        (job,) = fetch_jobs(engine, "id = :id", id=callback)
        assert job["payload"]["batch"]["counts"]["completed"] == FINISHERS * per_round, job["payload"]


def run_enqueuers(database_url, jobs, rounds=1, processes=FINISHERS, shuffle=False):
    from tests.support.workflow_workers import enqueuer

    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=enqueuer, args=(database_url, SECRET, jobs, rounds, barrier, results, shuffle))
             for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * processes
    return [results.get(timeout=10)[1] for _ in procs]


def test_singleton_keys_under_concurrent_enqueues(clean_db, database_url):
    jobs = [{"type": "wf.stage", "singleton_key": f"sync:store-{k}", "payload": {"k": k}} for k in range(20)]
    outs = run_enqueuers(database_url, jobs, rounds=3, shuffle=True)  # each process in an order of its own
    ids_per_process = [ids for out in outs for ids, _, _ in out]
    assert all(ids == ids_per_process[0] for ids in ids_per_process)  # everyone got the same job per key
    created = sum(c for out in outs for _, flags, _ in out for c in flags)
    assert created == 20
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*), count(DISTINCT singleton_key) FROM jobs")).one() == (20, 20)


def test_debounce_under_a_burst_becomes_one_job(clean_db, database_url):
    burst = [{"type": "wf.stage", "singleton_key": "webhook:product-7", "debounce_s": 60,
              "payload": {"event": i}} for i in range(5)]
    outs = run_enqueuers(database_url, burst, rounds=5)
    all_ids = {job_id for out in outs for ids, _, _ in out for job_id in ids}
    assert len(all_ids) == 1  # 8 processes x 5 rounds x 5 events: one job
    created = sum(c for out in outs for _, flags, _ in out for c in flags)
    absorbed = sum(len(debounced) for out in outs for _, _, debounced in out)
    assert created == 1 and absorbed == 8 * 5 * 5 - 1
    (job,) = fetch_jobs(clean_db)
    assert job["status"] == "pending" and job["payload"]["event"] in range(5)
