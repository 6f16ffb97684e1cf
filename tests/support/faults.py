"""A gunicorn running the fault handlers (tests/support/fault_handlers.py), its workers' pids, calls to it, and a
drain until every job is final."""
from __future__ import annotations

import time
from pathlib import Path

import requests
from sqlalchemy import text

import tests.support.fault_handlers  # noqa: F401 - registers the fault.* types in this process too
from tests.support.db import fetch_jobs
from tests.support.gunicorn import Gunicorn
from tests.support.settings import AUTH

HANDLERS = "tests.support.job_handlers,tests.support.fault_handlers"


def fault_server(database_url: str, workers: int = 1, threads: int = 4, **env) -> Gunicorn:
    server = Gunicorn(database_url, workers=workers, threads=threads)
    server.env.update(JOBPROCESSOR_HANDLERS=HANDLERS, **{k: str(v) for k, v in env.items()})
    return server


def worker_pids(server: Gunicorn) -> list[int]:
    master = server.proc.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def wait_for_workers(server: Gunicorn, count: int, exclude=(), timeout: float = 60) -> list[int]:
    # generous: on a loaded machine (CI's two cores, a suite in two workers) a fresh worker takes seconds to load
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in worker_pids(server) if pid not in exclude]
        if len(pids) >= count:
            try:  # a fresh worker answers once it has loaded the app
                if requests.get(server.base + "/healthz", timeout=5).status_code == 200:
                    return pids
            except requests.RequestException:
                pass
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not bring back {count} workers")


def call(server: Gunicorn, timeout: float = 60, **params) -> requests.Response:
    return requests.post(server.base + "/process-pending", params=params, headers=AUTH, timeout=timeout)


def drain(server: Gunicorn, engine, deadline_s: float, **params) -> list[dict]:
    """Call until every job is final (waiting out leases and backoff), return the summaries."""
    summaries = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        response = call(server, **params)
        assert response.status_code == 200, response.text
        summaries.append(response.json())
        with engine.connect() as conn:
            open_jobs = conn.execute(text(
                "SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'failed', 'cancelled')")).scalar_one()
        if open_jobs == 0:
            return summaries
        if response.json()["claimed"] == 0:
            time.sleep(0.3)
    still_open = fetch_jobs(engine, "status <> 'completed'")
    raise AssertionError(f"jobs still open after {deadline_s} s: {still_open}")
