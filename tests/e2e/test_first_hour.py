"""A newcomer's first hour, following the README literally: `make run` keeps its database URL and secret in .env,
where the Flask CLI of a second terminal finds them (python-dotenv); `make demo` adds its sample jobs once however
often it starts; the README's own examples name job types that exist; stopping and priorities are explained."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from jobprocessor import devdb, devenv
from jobprocessor.handlers import get_handler
from tests.support.settings import ROOT

README = (ROOT / "README.md").read_text()


def db_name(url: str) -> str:
    return make_url(url).database


@pytest.fixture
def embedded_test_database(database_url):
    """The test database is the embedded server's (as under make test and CI); else there is nothing to test."""
    pgdata = devdb.data_dir()
    name = make_url(database_url).database  # jobprocessor_test, or a pytest-xdist worker's own database
    if not (pgdata / "PG_VERSION").exists() or devdb.url(name, pgdata) != database_url:
        pytest.skip("TEST_DATABASE_URL is not the embedded server: make run's .env handling does not apply")
    return database_url


def test_prepare_writes_the_embedded_url_and_a_secret_once(tmp_path, embedded_test_database):
    env_file = tmp_path / ".env"
    env_file.write_text("JOBS_CONCURRENCY=4\n")
    exports = devenv.prepare(env_file, {}, database=db_name(embedded_test_database), say=lambda _: None)
    assert exports["DATABASE_URL"] == embedded_test_database and len(exports["CRON_SECRET"]) >= 32
    assert exports["JOBS_CONCURRENCY"] == "4"
    first = env_file.read_text()
    assert devenv.MARKER in first
    assert devenv.prepare(env_file, {}, database=db_name(embedded_test_database), say=lambda _: None) == exports
    assert env_file.read_text() == first  # a second start changes nothing: same secret, same line
    # a stale port on make run's own line (a new .pgdata) is rewritten; the environment wins and is not exported
    env_file.write_text(first.replace(embedded_test_database, "postgresql://postgres@127.0.0.1:1/x"))
    again = devenv.prepare(env_file, {"CRON_SECRET": "x" * 20}, database=db_name(embedded_test_database),
                           say=lambda _: None)
    assert again["DATABASE_URL"] == embedded_test_database and "CRON_SECRET" not in again


def test_a_database_url_of_your_own_is_kept(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DATABASE_URL=postgresql://me@db.example.com/app\nCRON_SECRET=abcdefghijklmnopqrstu\n")
    exports = devenv.prepare(env_file, {}, say=lambda _: None)  # never starts the embedded server for it
    generated = {name: exports.pop(name) for name in ("DASHBOARD_SECRET", "DASHBOARD_SESSION_KEY")}
    assert exports == {"DATABASE_URL": "postgresql://me@db.example.com/app", "CRON_SECRET": "abcdefghijklmnopqrstu"}
    assert all(len(value) >= 32 for value in generated.values())  # the dashboard's, generated once
    assert devenv.MARKER not in env_file.read_text()
    assert devenv.prepare(env_file, {"DATABASE_URL": "postgresql://other/x"}, say=lambda _: None) == \
        {"CRON_SECRET": "abcdefghijklmnopqrstu", **generated}


def test_the_shell_lines_quote_values(tmp_path, capsys, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("DATABASE_URL=postgresql://me@db/app\nCRON_SECRET='a b $c;d'\n")
    monkeypatch.delenv("CRON_SECRET", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    devenv.main(["prepare", str(env_file)])
    lines = capsys.readouterr().out.splitlines()
    assert f"export CRON_SECRET={shlex.quote('a b $c;d')}" in lines


def test_a_second_terminals_flask_cli_just_works(tmp_path, embedded_test_database):
    """What a newcomer types in another terminal while make run runs: no export, only make run's .env."""
    devenv.prepare(tmp_path / ".env", {}, database=db_name(embedded_test_database), say=lambda _: None)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CRON_SECRET", "TEST_DATABASE_URL", "FLASK_SKIP_DOTENV")}
    env["PYTHONPATH"] = str(ROOT)  # where wsgi.py is; the terminal's own folder holds only .env here
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "health"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "status:" in result.stdout and "Traceback" not in result.stderr


def test_make_demo_enqueues_its_jobs_once(app, engine):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["jobs", "demo", "--count", "40"])
    second = runner.invoke(args=["jobs", "demo", "--count", "40"])
    assert first.exit_code == 0 and second.exit_code == 0, (first.output, second.output)
    assert first.output.strip() == '{"enqueued": 40, "already_there": 0}'
    assert second.output.strip() == '{"enqueued": 0, "already_there": 40}'
    from tests.support.db import fetch_jobs

    assert len(fetch_jobs(engine)) == 40


def test_the_readmes_schedule_example_names_a_type_that_exists(app):
    import jobprocessor.handlers.demo  # noqa: F401 - the README's example runs under make demo

    examples = re.findall(r"jobs schedule add [\w.-]+ \"[^\"]+\" ([\w.]+)", README)
    assert examples, "the README shows a schedule example"
    for job_type in examples:
        assert get_handler(job_type) is not None, job_type
    runner = app.test_cli_runner()
    for line in re.findall(r"flask --app wsgi (jobs schedule add [^\n`]+)", README):
        result = runner.invoke(args=shlex.split(line))
        assert result.exit_code == 0, (line, result.output)


def test_the_readme_says_how_to_stop_and_names_the_priorities():
    assert "make db-stop" in README and "Ctrl-C" in README
    for name, number in (("urgent", 1), ("high", 2), ("normal", 5), ("low", 10)):
        assert re.search(rf"`{name}`[^|\n]{{0,12}}\b{number}\b", README), name


def test_make_run_writes_and_reads_its_env_file():
    script = (ROOT / "scripts" / "run.sh").read_text()
    assert "jobprocessor.devenv prepare .env" in script
    assert ". ./.env" not in script  # the environment wins over the file (eval of devenv's export lines)
