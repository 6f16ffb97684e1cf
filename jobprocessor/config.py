"""Every setting, read from the environment once, in create_app(), and validated there.

Each setting has a documented default and bounds; a bad value stops start-up with one line naming the variable
(`ConfigError`). Nothing here runs at import time.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

MIN_SECRET_LENGTH = 16


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def normalise_database_url(url: str) -> str:
    """postgres:// and postgresql:// both mean psycopg2 here (SQLAlchemy 2.1 would pick psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def _setting(default: Any, parse: Callable[[str], Any], doc: str, lo: float | None = None, hi: float | None = None):
    return field(default=default, metadata={"parse": parse, "doc": doc, "lo": lo, "hi": hi})


def _optional_int(raw: str) -> int | None:
    return None if raw.strip() == "" else int(raw)


def _modules(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


@dataclass(frozen=True)
class Settings:
    DATABASE_URL: str = _setting("", normalise_database_url, "PostgreSQL URL; required (make run/test start an "
                                                             "embedded server and set it)")
    CRON_SECRET: str = _setting("", str, "shared secret for every endpoint but /healthz, >= 16 characters; unset: "
                                         "those endpoints answer 503 (fail closed)")
    DB_POOL_MAX: int = _setting(10, int, "most database connections one process opens (each kept once opened)",
                                1, 1000)
    DB_POOL_MIN: int = _setting(2, int, "connections each gunicorn worker opens at start", 0, 1000)
    JOBS_MAX_PER_RUN: int = _setting(10, int, "default `limit` of one /process-pending call", 1, 1000)
    JOBS_MAX_RUNTIME_S: float = _setting(50.0, float, "default runtime budget of one call, seconds", 1, 900)
    JOBS_CONCURRENCY: int = _setting(8, int, "handlers run at once inside one call", 1, 256)
    JOBS_MAX_PER_STORE: int | None = _setting(None, _optional_int, "hard cap of jobs one store gets per claim; "
                                                                   "unset: work-conserving fair share", 1, 1000)
    JOBS_LEASE_S: float = _setting(300.0, float, "how long a claim is held before another call may rescue it, "
                                                 "seconds", 2, 86400)
    JOBS_RESCUE_LIMIT: int = _setting(1000, int, "most expired leases one call rescues", 1, 100000)
    JOBS_DEFAULT_TIMEOUT_S: float = _setting(30.0, float, "timeout_s of a handler that declares none", 0.1, 86400)
    JOBS_DEFAULT_MAX_ATTEMPTS: int = _setting(3, int, "max_attempts of a handler that declares none", 1, 100)
    JOBS_SCHEDULES_PER_RUN: int = _setting(100, int, "most due recurring-job schedules one call enqueues", 1, 10000)
    JOBS_CLEANUP_KEEP_COMPLETED_DAYS: float = _setting(30.0, float, "completed jobs older than this many days move "
                                                                    "to jobs_archive (system.cleanup)", 0, 36500)
    JOBS_CLEANUP_KEEP_FAILED_DAYS: float = _setting(90.0, float, "failed and cancelled jobs older than this many "
                                                                 "days are deleted (system.cleanup)", 0, 36500)
    JOBS_CLEANUP_BATCH_SIZE: int = _setting(10000, int, "rows per cleanup batch, each batch its own transaction",
                                            100, 1000000)
    JOBS_CLEANUP_STATEMENT_TIMEOUT_S: float = _setting(30.0, float, "statement_timeout of one cleanup batch, seconds "
                                                                    "(a batch that hits it is rolled back and the "
                                                                    "batch size halved)", 1, 3600)
    JOBPROCESSOR_HANDLERS: tuple = _setting((), _modules, "comma-separated modules imported at start-up to "
                                                          "register handlers")
    MAX_REQUEST_BYTES: int = _setting(4 * 1024 * 1024, int, "largest request body accepted (413 above)",
                                      1024, 256 * 1024 * 1024)
    MAX_PAYLOAD_BYTES: int = _setting(256 * 1024, int, "largest payload of one job, as JSON", 64, 64 * 1024 * 1024)
    MAX_PAYLOAD_DEPTH: int = _setting(32, int, "deepest nesting of a job payload", 1, 1000)
    OPENAI_API_KEY: str = _setting("", str, "OpenAI API key for product.optimize; unset: those jobs fail with a clear "
                                            "error, everything else works (never logged)")
    OPENAI_BASE_URL: str = _setting("", str, "OpenAI API base URL, as the official SDK reads it; empty: "
                                             "https://api.openai.com/v1")
    OPENAI_MODEL: str = _setting("gpt-5-mini", str, "model product.optimize asks")
    OPENAI_RPM: int = _setting(450, int, "requests per minute all processes and instances together may send to "
                                         "OpenAI (the shared limiter)", 1, 10_000_000)
    OPENAI_TPM: int = _setting(450_000, int, "tokens per minute all processes and instances together may use "
                                             "(the shared limiter), counted as OpenAI does: each request, on "
                                             "arrival, the larger of its output cap and its input characters / 4",
                               1, 10_000_000_000)
    OPENAI_MAX_OUTPUT_TOKENS: int = _setting(4096, int, "upper bound of the output cap (max_completion_tokens, "
                                                        "reasoning included) of one OpenAI call; the cap follows "
                                                        "what answers of the job type and model use (p99 plus "
                                                        "margin), this until there is data; a cut-off answer is "
                                                        "asked again with a larger cap", 16, 1_000_000)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> "Settings":
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                values[f.name] = overrides[f.name]
            elif f.name in environ:
                values[f.name] = _parse(f, environ[f.name])
        return cls(**values)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, lo, hi = getattr(self, f.name), f.metadata["lo"], f.metadata["hi"]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if isinstance(value, float) and not math.isfinite(value):
                    raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    raise ConfigError(f"{f.name} must be between {lo:g} and {hi:g}, got {value!r}")
        if not self.DATABASE_URL:
            raise ConfigError("DATABASE_URL is not set (make run and make test start an embedded PostgreSQL "
                              "and set it; in production point it at your database)")
        if not self.DATABASE_URL.startswith("postgresql+psycopg2://"):
            raise ConfigError("DATABASE_URL must be a postgres:// or postgresql:// URL")
        if self.CRON_SECRET and len(self.CRON_SECRET) < MIN_SECRET_LENGTH:
            raise ConfigError(f"CRON_SECRET must be at least {MIN_SECRET_LENGTH} characters long")
        if self.DB_POOL_MIN > self.DB_POOL_MAX:
            raise ConfigError("DB_POOL_MIN must not exceed DB_POOL_MAX")
        if self.OPENAI_BASE_URL and not self.OPENAI_BASE_URL.startswith(("http://", "https://")):
            raise ConfigError("OPENAI_BASE_URL must be an http:// or https:// URL")
        if not self.OPENAI_MODEL.strip():
            raise ConfigError("OPENAI_MODEL must not be empty")

    def __repr__(self) -> str:  # never print the secret or the database password
        return "Settings(...)"

    @classmethod
    def documentation(cls) -> list[tuple[str, Any, str]]:
        """(variable, default, meaning) for the README table."""
        return [(f.name, f.default, f.metadata["doc"]) for f in dataclasses.fields(cls)]


def _parse(f: dataclasses.Field, raw: str) -> Any:
    try:
        return f.metadata["parse"](raw)
    except ValueError:
        raise ConfigError(f"{f.name} must be {_kind(f)}, got {raw!r}") from None


def _kind(f: dataclasses.Field) -> str:
    parse = f.metadata["parse"]
    return {int: "a whole number", float: "a number", _optional_int: "a whole number or empty"}.get(parse, "valid")
