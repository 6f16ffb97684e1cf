"""Shared fixtures: a real PostgreSQL (TEST_DATABASE_URL, set by scripts/test.sh; else the embedded server), a
schema built by the real migrations once per session, and a clean jobs table per test."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine, text

from jobprocessor import create_app
from jobprocessor.config import Settings, normalise_database_url

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def _database_url() -> str:
    """The session's database: TEST_DATABASE_URL's (else the embedded server's jobprocessor_test); under
    pytest-xdist each worker gets a database of its own beside it (`<name>_gw0`, ...), created as needed, so the
    workers' schemas, truncations and advisory locks never meet."""
    from jobprocessor import devdb

    url = devdb.database_url("TEST_DATABASE_URL", "jobprocessor_test")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/')}_{worker}"
    admin = create_engine(normalise_database_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return urlunsplit(parts._replace(path="/" + name))


def make_settings(database_url: str, **overrides) -> Settings:
    # no idle grace: a test's call ends as soon as its queue is dry (tests of the grace set it)
    values = dict(DATABASE_URL=normalise_database_url(database_url), CRON_SECRET=SECRET,
                  JOBPROCESSOR_HANDLERS=("tests.job_handlers",), JOBS_IDLE_GRACE_S=0.0)
    values.update(overrides)
    return Settings.from_env({}, **values)


@pytest.fixture(scope="session")
def database_url() -> str:
    url = _database_url()
    engine = create_engine(normalise_database_url(url))
    with engine.begin() as conn:  # a fresh schema each session, built by the real migrations
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    from flask_migrate import upgrade

    app = create_app(make_settings(url))
    with app.app_context():
        upgrade()
        from jobprocessor.extensions import db

        with db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE job_executions (job_id bigint NOT NULL, pid int NOT NULL, "
                              "attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"))
            # each run of a job.step() function (tests/workflow_handlers.py)
            conn.execute(text("CREATE TABLE step_runs (job_id bigint NOT NULL, name text NOT NULL, pid int NOT NULL, "
                              "attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"))
            # test.span: when each run of a handler started and ended (the flow-control tests count overlaps)
            conn.execute(text("CREATE TABLE job_spans (job_id bigint NOT NULL, store_id text, pid int NOT NULL, "
                              "started_at timestamptz NOT NULL DEFAULT clock_timestamp(), ended_at timestamptz)"))
        db.engine.dispose()
    return url


@pytest.fixture(scope="session")
def raw_engine(database_url):
    engine = create_engine(normalise_database_url(database_url), pool_size=5)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_db(raw_engine):
    with raw_engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_executions, jobs_archive, job_schedules, job_store_queues, job_ticks, "
                          "job_type_runtimes, job_dependencies, job_steps, job_batch_callbacks, step_runs, "
                          "job_actions, dashboard_signin_failures, job_pauses, job_store_limits, "
                          "job_store_starts, job_store_quota_holds, job_spans "
                          "RESTART IDENTITY"))
    return raw_engine


@pytest.fixture
def settings(database_url) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def app(settings, clean_db):
    app = create_app(settings)
    app.config["TESTING"] = True
    with app.app_context():
        yield app
        from jobprocessor.extensions import db

        db.engine.dispose()


@pytest.fixture
def engine(app):
    from jobprocessor.extensions import db

    return db.engine


@pytest.fixture
def client(app):
    return app.test_client()


def insert_jobs(engine, n: int, job_type: str = "test.echo", **columns) -> list[int]:
    """n jobs in one statement; columns are SQL expressions over g (1..n), e.g. store_id="'s' || (g % 3)"."""
    names = ["type"] + list(columns)
    values = [f"'{job_type}'"] + list(columns.values())
    sql = (f"INSERT INTO jobs ({', '.join(names)}) SELECT {', '.join(values)} FROM generate_series(1, :n) AS g "
           "RETURNING id")
    with engine.begin() as conn:
        return [row[0] for row in conn.execute(text(sql), {"n": n})]


def fetch_jobs(engine, where: str = "true", **params) -> list:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT * FROM jobs WHERE {where} ORDER BY id"), params).mappings().all()


def drain_until_idle(call, idle_calls: int = 3) -> list:
    """Call `call()` (one cron tick, returning a dict or RunSummary) until `idle_calls` ticks in a row claim
    nothing; other callers may still be finishing what they hold. Returns every tick's result."""
    results, idle = [], 0
    while idle < idle_calls:
        result = call()
        results.append(result)
        claimed = result["claimed"] if isinstance(result, dict) else result.claimed
        idle = idle + 1 if claimed == 0 else 0
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """A real gunicorn serving wsgi:app on loopback (from `root`: this tree, or another source tree's code)."""

    def __init__(self, database_url: str, workers: int = 2, threads: int = 4, env: dict | None = None,
                 root: Path = ROOT):
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, DATABASE_URL=database_url, CRON_SECRET=SECRET,
                        JOBPROCESSOR_HANDLERS="tests.job_handlers", WEB_CONCURRENCY=str(workers), JOBS_IDLE_GRACE_S="0",
                        GUNICORN_THREADS=str(threads), GUNICORN_ACCESSLOG="", PYTHONPATH=str(root),
                        **(env or {}))
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gunicorn-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Gunicorn":
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "gunicorn.conf.py", "--bind",
             f"127.0.0.1:{self.port}"], cwd=self.root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        import requests

        for _ in range(150):
            try:
                # refused until the master listens; once it does, the request waits in the listen queue until a
                # worker has loaded the app, however long that takes on a busy machine: a request given up after a
                # short read timeout would still be served later (a /healthz query at any moment of the test: it
                # made the brute-force test's "no byte to PostgreSQL" flaky)
                if requests.get(self.base + "/healthz", timeout=(1, 120)).status_code == 200:
                    return self
            except requests.RequestException:  # refused: the master is not listening yet
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("gunicorn did not start:\n" + self.log_path.read_text())

    def output(self) -> str:
        return self.log_path.read_text()

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
