"""Every setting, read from the environment once, in create_app(), and validated there.

Each setting has a documented default and bounds; a bad value stops start-up with one line naming the variable
(`ConfigError`). Nothing here runs at import time.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

MIN_SECRET_LENGTH = 16
MIN_SESSION_KEY_LENGTH = 32  # the dashboard's cookie signing key: as long as the HMAC-SHA256 it keys ought to get
# RFC 7518 3.2: an HS256 key at least as long as the hash; the signing keys Upstash gives are 32 characters
MIN_QSTASH_KEY_LENGTH = 32
GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def _emails(raw: str) -> tuple[str, ...]:
    # e-mail addresses compare case-insensitively (Google writes service accounts in lower case)
    return tuple(name.strip().lower() for name in raw.split(",") if name.strip())


def _check_url(name: str, url: str, allow_query: bool = False) -> None:
    """An absolute http(s) URL; plain http only to this machine (keys or a public URL fetched or compared over an
    open network could be forged)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an absolute https:// URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ConfigError(f"{name} must use https:// (plain http:// only for 127.0.0.1 or localhost)")
    if not allow_query and (parts.query or parts.fragment):
        raise ConfigError(f"{name} must not have a query string or fragment")


@dataclass(frozen=True)
class Settings:
    DATABASE_URL: str = _setting("", normalise_database_url, "PostgreSQL URL; required (make run/test start an "
                                                             "embedded server and set it)")
    CRON_SECRET: str = _setting("", str, "shared secret for every endpoint but /healthz, >= 16 characters; unset: "
                                         "those endpoints answer 503 (fail closed)")
    DB_POOL_MAX: int = _setting(30, int, "most database connections one process opens (each kept once opened); "
                                         "sized for JOBS_MAX_TICKS_PER_PROCESS x JOBS_CONCURRENCY handler threads "
                                         "that use the database, plus the request threads", 1, 1000)
    DB_POOL_MIN: int = _setting(2, int, "connections each gunicorn worker opens at start", 0, 1000)
    JOBS_MAX_PER_RUN: int = _setting(10000, int, "default `limit` of one /process-pending call: the most jobs it "
                                                 "claims over all its rounds", 1, 1_000_000)
    JOBS_MAX_RUNTIME_S: float = _setting(90.0, float, "default runtime budget of one call, seconds: a call claims "
                                                      "and starts jobs until then; longer than the cron's interval "
                                                      "so that calls overlap and the work never pauses", 1, 900)
    JOBS_CONCURRENCY: int = _setting(8, int, "threads one call runs handlers on (types that pass a shared rate "
                                             "limit get their own, see JOBS_MAX_IO_CONCURRENCY)", 1, 256)
    JOBS_MAX_IO_CONCURRENCY: int = _setting(100, int, "most threads one call runs for the jobs of one shared rate "
                                                      "limit (product.optimize: OpenAI); the call sizes them as "
                                                      "rate x observed latency", 1, 1000)
    JOBS_MAX_PER_STORE: int | None = _setting(None, _optional_int, "hard cap of jobs one store gets per claim "
                                                                   "round; unset: work-conserving fair share",
                                              1, 1000)
    JOBS_LEASE_S: float = _setting(60.0, float, "lease of a claimed job, seconds; a call renews it every quarter "
                                                "of this while the job's handler runs, so a dead process's jobs are "
                                                "back within about this long", 5, 86400)
    JOBS_STUCK_HANDLER_S: float = _setting(600.0, float, "how long past its deadline a handler that has not "
                                                         "returned keeps its job's lease; then the lease runs out and "
                                                         "another call may run the job again", 1, 86400)
    JOBS_IDLE_GRACE_S: float = _setting(5.0, float, "a call whose queue ran dry ends after this many idle seconds "
                                                    "(a call with nothing due at all answers at once)", 0, 600)
    JOBS_MAX_TICKS_PER_PROCESS: int = _setting(2, int, "calls one process runs at once; another answers at once "
                                                       "with \"busy\" (keeps request threads free for the API)",
                                               1, 64)
    JOBS_MAX_DEFERRALS: int = _setting(100, int, "a job put off more often than this (RetryLater, or cut short by "
                                                 "a call's budget) fails", 1, 1_000_000)
    JOBS_MAX_DEFERRAL_S: float = _setting(86400.0, float, "a job still put off this many seconds after the first "
                                                          "time fails", 1, 365 * 86400)
    JOBS_TICK_HISTORY_DAYS: float = _setting(7.0, float, "days of job_ticks (the calls' history) system.cleanup "
                                                         "keeps", 0, 3650)
    JOBS_ACTION_LOG_DAYS: float = _setting(365.0, float, "days of the action log (job_actions: bulk actions, "
                                                         "pauses, limits) system.cleanup keeps", 0, 36500)
    JOBS_RESCUE_LIMIT: int = _setting(1000, int, "most expired leases one claim round rescues (a call claims in "
                                                 "rounds, each may rescue this many)", 1, 100000)
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
    # --- trigger auth beside CRON_SECRET (jobprocessor/triggers/): each method is on when its setting is set ---
    QSTASH_CURRENT_SIGNING_KEY: str = _setting("", str, "Upstash QStash current signing key: `Upstash-Signature` "
                                                        "admits /process-pending; unset: QStash off")
    QSTASH_NEXT_SIGNING_KEY: str = _setting("", str, "Upstash QStash next signing key, also accepted (key rotation)")
    TRIGGER_PUBLIC_URL: str = _setting("", str, "public base URL schedulers call (https://host[/prefix]); QStash's "
                                                "`sub` must be it + path and query; unset: the URL the app sees")
    GOOGLE_OIDC_AUDIENCE: str = _setting("", str, "`aud` a Google OIDC token (Cloud Scheduler, Cloud Tasks) must "
                                                  "carry to admit /process-pending; unset: Google OIDC off")
    GOOGLE_OIDC_ALLOWED_EMAILS: tuple = _setting((), _emails, "comma-separated service-account e-mails whose "
                                                              "tokens are admitted; required with the audience")
    GOOGLE_OIDC_JWKS_URL: str = _setting(GOOGLE_JWKS_URL, str, "where Google's signing keys (JWKS) are fetched; "
                                                               "cached as its Cache-Control says")
    TRIGGER_JWT_LEEWAY_S: float = _setting(30.0, float, "clock skew allowed on the exp, nbf and iat of QStash and "
                                                        "Google tokens, seconds", 0, 300)
    TRIGGER_HMAC_SECRET: str = _setting("", str, "secret of the timestamped HMAC (`X-Jobprocessor-Signature`) that "
                                                 "admits /process-pending, >= 16 characters; unset: HMAC off")
    # --- the operator dashboard (/dashboard, jobprocessor/dashboard/): closed until a secret is set ---
    DASHBOARD_SECRET: str = _setting("", str, "sign-in secret of the dashboard's operators (may act: retry, cancel, "
                                              "pause, ...), >= 16 characters; unset with DASHBOARD_READONLY_SECRET "
                                              "unset too: /dashboard answers 503")
    DASHBOARD_READONLY_SECRET: str = _setting("", str, "sign-in secret of read-only dashboard users (see "
                                                       "everything, act on nothing), >= 16 characters; optional")
    DASHBOARD_SESSION_KEY: str = _setting("", str, "key that signs dashboard session cookies, >= 32 characters; "
                                                   "required when a dashboard secret is set (make run generates "
                                                   "one into .env); changing it signs everyone out")
    DASHBOARD_SESSION_HOURS: float = _setting(12.0, float, "how long a dashboard sign-in lasts, hours", 0.1, 720)
    DASHBOARD_SIGNIN_ATTEMPTS: int = _setting(10, int, "failed dashboard sign-ins one client address may make in "
                                                       "10 minutes before it is refused (429) until the window "
                                                       "passes", 1, 10000)
    JOBPROCESSOR_HANDLERS: tuple = _setting((), _modules, "comma-separated modules imported at start-up to "
                                                          "register handlers")
    LOG_LEVEL: str = _setting("INFO", _log_level, "level of the `jobprocessor` loggers: DEBUG, INFO, WARNING, "
                                                  "ERROR or CRITICAL")
    MAX_REQUEST_BYTES: int = _setting(4 * 1024 * 1024, int, "largest request body accepted (413 above)",
                                      1024, 256 * 1024 * 1024)
    MAX_PAYLOAD_BYTES: int = _setting(256 * 1024, int, "largest payload of one job, as JSON", 64, 64 * 1024 * 1024)
    MAX_PAYLOAD_DEPTH: int = _setting(32, int, "deepest nesting of a job payload", 1, 1000)
    MAX_RESULT_BYTES: int = _setting(1024 * 1024, int, "largest result a handler may return, as JSON; a bigger "
                                                       "one fails the job with an error that says so",
                                     64, 64 * 1024 * 1024)
    MAX_PAGE_BYTES: int = _setting(8 * 1024 * 1024, int, "about the most bytes of payloads, results and errors one "
                                                         "GET /jobs page holds (a page ends early, with next_after, "
                                                         "rather than grow past it; always at least one job)",
                                   64 * 1024, 1024 * 1024 * 1024)
    JOBS_MAX_STEP_BYTES: int = _setting(256 * 1024, int, "largest result of one job.step(), as JSON (a larger one "
                                                         "fails the job)", 64, 64 * 1024 * 1024)
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
                    raise ConfigError(f"{f.name} must be between {_number(lo)} and {_number(hi)}, got {value!r}")
        if not self.DATABASE_URL:
            raise ConfigError("DATABASE_URL is not set (make run and make test start an embedded PostgreSQL "
                              "and set it; in production point it at your database)")
        if not self.DATABASE_URL.startswith("postgresql+psycopg2://"):
            raise ConfigError("DATABASE_URL must be a postgres:// or postgresql:// URL")
        for name in SECRETS:
            check_secret_text(name, getattr(self, name))
        if self.CRON_SECRET and len(self.CRON_SECRET) < MIN_SECRET_LENGTH:
            raise ConfigError(f"CRON_SECRET must be at least {MIN_SECRET_LENGTH} characters long")
        self._check_trigger_auth()
        self._check_dashboard()
        if self.DB_POOL_MIN > self.DB_POOL_MAX:
            raise ConfigError("DB_POOL_MIN must not exceed DB_POOL_MAX")
        if self.OPENAI_BASE_URL and not self.OPENAI_BASE_URL.startswith(("http://", "https://")):
            raise ConfigError("OPENAI_BASE_URL must be an http:// or https:// URL")
        if not self.OPENAI_MODEL.strip():
            raise ConfigError("OPENAI_MODEL must not be empty")
        if self.OPENAI_TPM < self.OPENAI_MAX_OUTPUT_TOKENS:
            # a call is charged at least its output cap, which is OPENAI_MAX_OUTPUT_TOKENS until answers are known,
            # and a call charged more than a minute's tokens is refused: no OpenAI job could ever run
            raise ConfigError(f"OPENAI_TPM ({self.OPENAI_TPM}) must be at least OPENAI_MAX_OUTPUT_TOKENS "
                              f"({self.OPENAI_MAX_OUTPUT_TOKENS}): a call is charged at least its output cap")

    def _check_trigger_auth(self) -> None:
        """Each trigger method is all there or off: half a configuration is refused rather than left open."""
        for name in ("QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"):
            value = getattr(self, name)
            if value and len(value) < MIN_QSTASH_KEY_LENGTH:
                raise ConfigError(f"{name} must be at least {MIN_QSTASH_KEY_LENGTH} characters long (copy the "
                                  "key from the Upstash console)")
        if self.QSTASH_NEXT_SIGNING_KEY and not self.QSTASH_CURRENT_SIGNING_KEY:
            raise ConfigError("QSTASH_NEXT_SIGNING_KEY is set but QSTASH_CURRENT_SIGNING_KEY is not; set both")
        if self.TRIGGER_PUBLIC_URL:
            _check_url("TRIGGER_PUBLIC_URL", self.TRIGGER_PUBLIC_URL)
        if self.GOOGLE_OIDC_AUDIENCE and not self.GOOGLE_OIDC_ALLOWED_EMAILS:
            # anyone with a Google account can mint a token for any audience: the e-mail is what names the caller
            raise ConfigError("GOOGLE_OIDC_ALLOWED_EMAILS must list the service accounts allowed to call when "
                              "GOOGLE_OIDC_AUDIENCE is set")
        if self.GOOGLE_OIDC_ALLOWED_EMAILS and not self.GOOGLE_OIDC_AUDIENCE:
            raise ConfigError("GOOGLE_OIDC_AUDIENCE must be set when GOOGLE_OIDC_ALLOWED_EMAILS is")
        if any("@" not in email for email in self.GOOGLE_OIDC_ALLOWED_EMAILS):
            raise ConfigError("GOOGLE_OIDC_ALLOWED_EMAILS must be e-mail addresses separated by commas")
        _check_url("GOOGLE_OIDC_JWKS_URL", self.GOOGLE_OIDC_JWKS_URL, allow_query=True)
        if self.TRIGGER_HMAC_SECRET and len(self.TRIGGER_HMAC_SECRET) < MIN_SECRET_LENGTH:
            raise ConfigError(f"TRIGGER_HMAC_SECRET must be at least {MIN_SECRET_LENGTH} characters long")

    def _check_dashboard(self) -> None:
        """The dashboard's secrets: each long enough, distinct (a role is told by the secret), and a signing key
        whenever one is set (a session cookie nobody can forge)."""
        for name in ("DASHBOARD_SECRET", "DASHBOARD_READONLY_SECRET"):
            value = getattr(self, name)
            if value and len(value) < MIN_SECRET_LENGTH:
                raise ConfigError(f"{name} must be at least {MIN_SECRET_LENGTH} characters long")
        if self.DASHBOARD_SECRET and self.DASHBOARD_SECRET == self.DASHBOARD_READONLY_SECRET:
            raise ConfigError("DASHBOARD_READONLY_SECRET must differ from DASHBOARD_SECRET (the secret tells the role)")
        if (self.DASHBOARD_SECRET or self.DASHBOARD_READONLY_SECRET) and \
                len(self.DASHBOARD_SESSION_KEY) < MIN_SESSION_KEY_LENGTH:
            raise ConfigError(f"DASHBOARD_SESSION_KEY must be set, at least {MIN_SESSION_KEY_LENGTH} characters, when "
                              "a dashboard secret is set (make run generates one into .env)")

    def __repr__(self) -> str:  # never print the secret or the database password
        return "Settings(...)"

    @classmethod
    def documentation(cls) -> list[tuple[str, Any, str]]:
        """(variable, default, meaning) for the README table."""
        return [(f.name, f.default, f.metadata["doc"]) for f in dataclasses.fields(cls)]


# Secrets compared with what a caller sends in an HTTP header: servers strip a header value's surrounding
# whitespace and cannot carry control characters, so such a secret would never match (every request a 401)
SECRETS = ("CRON_SECRET", "TRIGGER_HMAC_SECRET", "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY")


def check_secret_text(name: str, value: str) -> None:
    """A secret set with a trailing newline (`echo secret > file`), made of spaces, or holding characters a header
    cannot carry is refused at start-up, naming the variable (never the value)."""
    if not value:
        return
    if not value.strip():
        raise ConfigError(f"{name} is made of whitespace only; set a real secret or leave it unset")
    if value != value.strip():
        raise ConfigError(f"{name} starts or ends with whitespace (a newline from a file?); HTTP strips it from "
                          "headers, so no request could match: remove it")
    if any(not (" " <= char <= "~") for char in value):
        raise ConfigError(f"{name} must be printable ASCII (HTTP headers carry nothing else reliably)")


def _number(value: float) -> str:
    """1000000 as 1000000, not 1e+06; 0.1 as 0.1."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _parse(f: dataclasses.Field, raw: str) -> Any:
    try:
        return f.metadata["parse"](raw)
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"{f.name} must be {_kind(f)}, got {raw!r}") from None


def _kind(f: dataclasses.Field) -> str:
    parse = f.metadata["parse"]
    return {int: "a whole number", float: "a number", _optional_int: "a whole number or empty"}.get(parse, "valid")
