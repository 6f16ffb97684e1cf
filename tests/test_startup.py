"""A bad setting stops start-up with ONE line naming the variable, exit status 3, no traceback: through the Flask
CLI (which imports wsgi.py), through gunicorn's master (gunicorn.conf.py checks before forking a worker) and through
a gunicorn worker (wsgi.py), e.g. a handler module that raises while it is imported."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest

from jobprocessor.startup import EXIT_CONFIG
from tests.support.settings import ROOT

BASE_ENV = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "FLASK_SKIP_DOTENV": "1", "PYTHONPATH": str(ROOT)}


def _env(**values) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CRON_SECRET", "JOBPROCESSOR_HANDLERS", "DATABASE_URL")}
    return {**env, **BASE_ENV, **values}


def assert_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == EXIT_CONFIG, output
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert output.startswith("jobprocessor: configuration error: ")
    for word in words:
        assert word in output, output


def test_the_flask_cli_says_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "health"], cwd=tmp_path,
                            env=_env(JOBS_CONCURRENCY="abc"), capture_output=True, text=True, timeout=60)
    assert_one_line(result, "JOBS_CONCURRENCY must be a whole number, got 'abc'")


@pytest.mark.parametrize("name,value,words", [
    ("JOBS_CONCURRENCY", "abc", "JOBS_CONCURRENCY must be a whole number"),
    ("GUNICORN_THREADS", "four", "GUNICORN_THREADS must be a whole number"),
    ("JOBPROCESSOR_HANDLERS", "myapp.jbos", "JOBPROCESSOR_HANDLERS: cannot import 'myapp.jbos'"),
])
def test_gunicorn_stops_before_any_worker_boots(tmp_path, name, value, words):
    result = subprocess.run([sys.executable, "-m", "gunicorn", "wsgi:app", "-c", str(ROOT / "gunicorn.conf.py"),
                             "--bind", "127.0.0.1:9"], cwd=ROOT, env=_env(**{name: value}), capture_output=True,
                            text=True, timeout=60)
    assert_one_line(result, words)


@pytest.mark.parametrize("values,words", [
    ({"LOG_LEVEL": "VERBOSE"}, ["LOG_LEVEL must be one of"]),
    ({"JOBS_LEASE_S": "2"}, ["JOBS_LEASE_S must be between 5 and"]),
    ({"CRON_SECRET": "a-long-enough-secret-0123456789\n"}, ["CRON_SECRET starts or ends with whitespace"]),
    ({"JOBPROCESSOR_HANDLERS": "tests.support.broken_handlers"},
     ["importing 'tests.support.broken_handlers' failed: RuntimeError: broken on purpose", "broken_handlers.py:"]),
])
def test_wsgi_says_one_line_and_exits_3(monkeypatch, capsys, values, words):
    """What a gunicorn worker (and the CLI) runs: wsgi.py, in this process."""
    for name in ("CRON_SECRET", "JOBPROCESSOR_HANDLERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**BASE_ENV, **values}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(ROOT / "wsgi.py"))
    captured = capsys.readouterr()
    assert exited.value.code == EXIT_CONFIG
    result = subprocess.CompletedProcess([], EXIT_CONFIG, captured.out, captured.err)
    assert_one_line(result, *words)
