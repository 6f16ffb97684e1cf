"""A regular (non-editable) `pip install .` carries the schema: sql/ and migrations/ are package data, so the
installed copy alone upgrades a fresh database and runs a tick, from a directory that is not the source tree.

Cost, kept small (about 10 s): the package is built and installed from a copy of the tree without build isolation
and without its dependencies (--no-deps --no-index: no download); the throw-away venv borrows the dependencies of
the test venv through a .pth line, which adds that folder to sys.path without running its editable-install hooks,
so `import jobprocessor` can only find the copy installed here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from jobprocessor.config import normalise_database_url
from tests.support.settings import ROOT

pytestmark = pytest.mark.slow

SHIPPED_SOURCES = ("jobprocessor", "sql", "migrations", "setup.py", "setup.cfg", "README.md")


@pytest.fixture
def fresh_database(database_url):
    """An empty database beside the test database, dropped afterwards."""
    name = f"jobprocessor_pkg_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalise_database_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=180, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def test_a_regular_install_upgrades_a_fresh_database_and_runs_a_tick(tmp_path, fresh_database):
    source = tmp_path / "src"
    source.mkdir()
    for name in SHIPPED_SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, source / name)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    with open(os.path.join(purelib, "_borrowed_dependencies.pth"), "w") as pth:
        pth.write(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the test venv's editable jobprocessor is visible through the .pth; never touch it
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
          "--no-build-isolation", "--ignore-installed", str(source)])
    shutil.rmtree(source)  # the installed copy must not need the tree it was built from
    installed = Path(purelib) / "jobprocessor"
    assert list((installed / "dashboard" / "templates" / "dashboard").glob("*.html")), "dashboard pages not shipped"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "CRON_SECRET", "JOBPROCESSOR_HANDLERS", "TEST_DATABASE_URL")}
    env.update(DATABASE_URL=fresh_database, FLASK_SKIP_DOTENV="1", PYTHONNOUSERSITE="1")
    # `flask db upgrade` on the fresh database, then a tick, through the CLI commands, all in one process (each
    # interpreter start costs seconds here)
    tick = _run([python, "-c", TICK], cwd=elsewhere, env=env)
    where, summary = tick.stdout.strip().splitlines()[-2:]
    assert where.startswith(purelib), where
    summary = json.loads(summary)
    assert (summary["claimed"], summary["succeeded"]) == (1, 1), tick.stdout


TICK = """
import jobprocessor
from jobprocessor import create_app
runner = create_app().test_cli_runner()
# flask db upgrade, then a tick; --limit 1: the call ends with its one job
for args in (["db", "upgrade"], ["jobs", "enqueue", "system.cleanup"],
             ["jobs", "process", "--limit", "1", "--budget", "10"]):
    result = runner.invoke(args=args)
    assert result.exit_code == 0, (args, result.output, result.exception)
print(jobprocessor.__file__)
print(result.output.strip().splitlines()[-1])
"""
