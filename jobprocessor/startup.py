"""Start-up with a bad configuration ends in one line naming the variable, not a traceback, for every way the app
starts: the Flask CLI and gunicorn's workers import wsgi.py (`app_or_exit`), and gunicorn's master checks the
environment before it forks any worker (`check_or_exit`, from gunicorn.conf.py), so a bad value stops gunicorn at
once instead of failing every worker it boots.

Exit status 3 (EXIT_CONFIG): what gunicorn's master takes from a worker as "failed to boot" and then stops, rather
than booting workers again and again.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Mapping, NoReturn

from .config import ConfigError, Settings

EXIT_CONFIG = 3


def fail(message: str) -> NoReturn:
    print(f"jobprocessor: configuration error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)


def app_or_exit():
    """create_app() from the environment, or one line on stderr and exit status 3."""
    from . import create_app

    try:
        return create_app()
    except ConfigError as exc:
        fail(str(exc))


def _whole_number(environ: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = environ.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        fail(f"{name} must be a whole number, got {raw!r}")
    if not lo <= value <= hi:
        fail(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def gunicorn_numbers(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """gunicorn.conf.py's own numbers, checked like the app's settings."""
    return {
        "workers": _whole_number(environ, "WEB_CONCURRENCY", 2, 1, 256),
        "threads": _whole_number(environ, "GUNICORN_THREADS", 4, 1, 1024),
        "timeout": _whole_number(environ, "GUNICORN_TIMEOUT", 960, 1, 86400),
        "graceful_timeout": _whole_number(environ, "GUNICORN_GRACEFUL_TIMEOUT", 60, 0, 86400),
        "port": _whole_number(environ, "PORT", 8000, 1, 65535),
    }


def check_or_exit(environ: Mapping[str, str] = os.environ, *, threads: int | None = None) -> Settings:
    """The settings as the workers will read them, and the handler modules findable; else one line, exit 3.
    (A handler module is only looked up here, not run: its own import errors surface in the worker, also as one
    line.)"""
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        fail(str(exc))
    for name in settings.JOBPROCESSOR_HANDLERS:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError) as exc:
            found = False
            detail = f" ({exc})"
        else:
            detail = ""
        if not found:
            fail(f"JOBPROCESSOR_HANDLERS: cannot import {name!r}{detail or ' (no such module)'}")
    if threads is not None and threads <= settings.JOBS_MAX_TICKS_PER_PROCESS:
        # works, but while that many cron calls run (each holds a request thread for its budget) the API and
        # /healthz wait for a thread: said once, not refused (tests and small set-ups run so on purpose)
        print(f"jobprocessor: warning: GUNICORN_THREADS ({threads}) does not exceed JOBS_MAX_TICKS_PER_PROCESS "
              f"({settings.JOBS_MAX_TICKS_PER_PROCESS}): while cron calls run, other requests wait for a thread",
              file=sys.stderr, flush=True)
    return settings
