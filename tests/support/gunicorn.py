"""A real gunicorn on loopback, for the end-to-end tests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.settings import ROOT, SECRET


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
                        JOBPROCESSOR_HANDLERS="tests.support.job_handlers", WEB_CONCURRENCY=str(workers),
                        JOBS_IDLE_GRACE_S="0",
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
