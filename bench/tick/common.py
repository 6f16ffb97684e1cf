"""What every bench/tick subcommand shares: a fresh schema, a real gunicorn, enqueueing through POST /jobs, a cron
that runs the README's curl line at a cadence, the fake OpenAI with the accounting asked for, time scaling, load
sampling, results files.

The benchmark reads the database as little as it can, so that it still runs after the processor changes: the
`jobs` columns status, attempts, created_at, started_at, completed_at, and the `result` of the bench's own job
types (their handlers record when they started). Everything else comes from the HTTP answers, from curl and from
the fake's own log of the requests it served.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import io
import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jobprocessor.config import Settings, normalise_database_url  # noqa: E402
from tests.support.gunicorn import Gunicorn  # noqa: E402 (the tests' gunicorn runner)
from tests.support.settings import AUTH, SECRET, make_settings  # noqa: E402
from tests.support.fake_openai import FakeOpenAI  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
DATABASE = "jobprocessor_bench_tick"
HANDLERS = "bench.tick_handlers"
TERMINAL = ("completed", "failed", "cancelled")
# durations that are not the tick's: cleanup statements; they keep their values under --scale
UNSCALED_SETTINGS = ("JOBS_CLEANUP_STATEMENT_TIMEOUT_S",)
# duration constants in code that bear on a tick, divided by k inside the server under --scale (bench/tick_scale.py);
# a name the code under test does not have is skipped and said so. Add the processor's new ones here.
CODE_CONSTANTS = (
    "jobprocessor.processor.GRACE_S", "jobprocessor.processor.FLUSH_EVERY_S", "jobprocessor.processor.POLL_S",
    "jobprocessor.processor.PREFETCH_HORIZON_S", "jobprocessor.processor.MIN_CLAIM_LEFT_S",
    "jobprocessor.processor.GATE_S", "jobprocessor.processor.GATE_READ_EVERY_S",
    "jobprocessor.ratelimit.limiter.MAX_INLINE_WAIT_S", "jobprocessor.ratelimit.limiter.MIN_CALL_S",
    "jobprocessor.ratelimit.limiter.MIN_RESCHEDULE_S", "jobprocessor.ratelimit.limiter.UNAVAILABLE_RETRY_S",
    "jobprocessor.handlers.openai_call.SETTLE_MARGIN_S", "jobprocessor.policies.openai_errors.THROTTLE_FALLBACK_S",
)
SCALED_TIMEOUTS = ("product.optimize",)  # job types whose declared timeout_s is divided by k


def default(name: str) -> Any:
    """A setting's default as the code under test defines it (so the bench follows the lead's new defaults)."""
    return next(f.default for f in dataclasses.fields(Settings) if f.name == name)


def bounds(name: str) -> tuple[Optional[float], Optional[float]]:
    f = next(f for f in dataclasses.fields(Settings) if f.name == name)
    return f.metadata.get("lo"), f.metadata.get("hi")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def percentile(values: list[float], share: float) -> Optional[float]:
    """Nearest-rank percentile (p99 of 30 values is the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


# --- time scaling ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    """--scale k: every duration divided by k, every rate multiplied by k, so the ratios latency : budget : cadence
    : limit stay as at k = 1 (a tick still sees the same number of requests, jobs and latencies per budget)."""

    k: float = 1.0

    def s(self, seconds: float) -> float:
        return seconds / self.k

    def per_min(self, rate: float) -> float:
        return rate * self.k

    def duration_settings(self) -> dict[str, str]:
        """Every JOBS_*_S setting of the code under test at default / k (clamped to its lower bound), so a new
        duration setting the processor grows (idle grace, heartbeat, ...) is scaled too."""
        if self.k == 1:
            return {}
        env = {}
        for f in dataclasses.fields(Settings):
            if f.name.startswith("JOBS_") and f.name.endswith("_S") and f.name not in UNSCALED_SETTINGS \
                    and isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
                lo, _ = bounds(f.name)
                env[f.name] = f"{max(f.default / self.k, lo or 0):g}"
        return env

    def openai_settings(self) -> dict[str, str]:
        """The project's own limit, at its default x k (k = 1: not set at all, the default applies)."""
        if self.k == 1:
            return {}
        return {"OPENAI_RPM": str(int(round(default("OPENAI_RPM") * self.k))),
                "OPENAI_TPM": str(int(round(default("OPENAI_TPM") * self.k)))}

    def code_constants(self) -> tuple[dict[str, float], list[str]]:
        """({name: value} present, [names] missing) of CODE_CONSTANTS in the code under test."""
        present, missing = {}, []
        for qualified in CODE_CONSTANTS:
            module_name, _, name = qualified.rpartition(".")
            try:
                value = getattr(importlib.import_module(module_name), name)
            except (ImportError, AttributeError):
                value = None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                present[qualified] = value
            else:
                missing.append(qualified)
        return present, missing

    def server_env(self) -> dict[str, str]:
        """What the server needs to run scaled: settings, the project's rate limit, the constants' patch."""
        if self.k == 1:
            return {}
        present, _ = self.code_constants()
        return {**self.duration_settings(), **self.openai_settings(), "BENCH_TIME_SCALE": f"{self.k:g}",
                "BENCH_SCALED_CONSTANTS": ",".join(present), "BENCH_SCALED_TIMEOUTS": ",".join(SCALED_TIMEOUTS)}

    def handlers(self) -> str:
        return HANDLERS + (",bench.tick_scale" if self.k != 1 else "")

    def describe(self) -> list[str]:
        if self.k == 1:
            return ["time scale: none (real seconds, real minutes)"]
        settings = ", ".join(f"{k}={v}" for k, v in {**self.duration_settings(), **self.openai_settings()}.items())
        present, missing = self.code_constants()
        constants = ", ".join(f"{q.rpartition('.')[2]} {v:g}->{v / self.k:g}" for q, v in present.items())
        return [f"time scale k={self.k:g}: cadence, latencies and budgets / {self.k:g}, rate limits x {self.k:g}, "
                f"so latency : budget : cadence : limit keep their ratios; one cron minute is {60 / self.k:g} s and "
                "the figures below are per cron minute",
                f"  settings: {settings}",
                f"  constants in code, / {self.k:g} in the server (bench/tick_scale.py): {constants}; declared "
                f"timeout_s of {', '.join(SCALED_TIMEOUTS)} / {self.k:g}"
                + (f"; not in this code: {', '.join(missing)}" if missing else ""),
                "  not scaled: the limiter's 1 s burst (Limits.burst_s), retry backoff of failed jobs (10 s x 2^n); "
                "the fake's buckets hold one cron minute of budget (the unscaled limits), as OpenAI's hold a minute"]


# --- database --------------------------------------------------------------------------------------------------

def database_url() -> str:
    from jobprocessor import devdb

    return devdb.database_url("DATABASE_URL", DATABASE)


def fresh_schema(url: str):
    """Drop and rebuild the schema by the migrations of the code under test; returns an engine for the bench's
    own reads. A fresh schema per run: every table the processor has (tick history included) starts empty."""
    engine = create_engine(normalise_database_url(url), pool_size=2)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    from flask_migrate import upgrade

    from jobprocessor import create_app

    app = create_app(make_settings(url))
    log = io.StringIO()
    with app.app_context(), contextlib.redirect_stderr(log):  # alembic's INFO lines, shown only on failure
        try:
            upgrade()
        except BaseException:
            sys.__stderr__.write(log.getvalue())
            raise
        from jobprocessor.extensions import db

        db.engine.dispose()
    return engine


def status_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())


def unfinished(engine) -> int:
    """Jobs not in a final state (any status the processor may add, e.g. one for jobs waiting on parents, counts)."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM jobs WHERE status <> ALL(:done)"),
                            {"done": list(TERMINAL)}).scalar_one()


def completed_times(engine) -> list[float]:
    """Unix times of every completed job's completed_at."""
    with engine.connect() as conn:
        return [float(t) for (t,) in conn.execute(text(
            "SELECT extract(epoch FROM completed_at) FROM jobs WHERE status = 'completed'"))]


# --- the server ------------------------------------------------------------------------------------------------

def server(url: str, env: dict[str, str], workers: int, threads: int, scale: Optional["Scale"] = None) -> Gunicorn:
    """The tests' Gunicorn (wsgi:app under gunicorn.conf.py, as the Procfile runs it) with the bench's handlers
    (and, scaled, the bench's constants patch). `env` wins over the scale's settings."""
    scale = scale or Scale()
    gunicorn = Gunicorn(url, workers=workers, threads=threads)
    gunicorn.env.update({"JOBPROCESSOR_HANDLERS": scale.handlers(), "LOG_LEVEL": "WARNING", **scale.server_env(),
                         **env})
    return gunicorn


def enqueue(base: str, jobs: list[dict], chunk: int = 500) -> list[int]:
    ids: list[int] = []
    session = requests.Session()
    for start in range(0, len(jobs), chunk):
        response = session.post(base + "/jobs", json={"jobs": jobs[start:start + chunk]}, headers=AUTH, timeout=120)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"POST /jobs answered {response.status_code}: {response.text[:300]}")
        ids += response.json()["ids"]
    return ids


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env wants NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


# --- the cron --------------------------------------------------------------------------------------------------

@dataclass
class Tick:
    index: int
    fired: float  # time.time() when curl was started
    seconds: Optional[float] = None  # until curl exited
    exit_code: Optional[int] = None
    body: Optional[dict] = None
    error: str = ""


class Cron:
    """A cron service: at t0, t0 + cadence, ... runs the README's curl line (`curl -fsS -X METHOD URL -H
    "Authorization: Bearer $CRON_SECRET" --max-time N`, no parameters unless `query` is given), each tick in its
    own process, overlapping ticks allowed (as cron does). Ticks are fired on the schedule, not after the previous
    one ends."""

    def __init__(self, base: str, cadence_s: float, max_time_s: float, method: str = "GET", query: str = "",
                 before_tick=None):
        self.url = f"{base}/process-pending{('?' + query) if query else ''}"
        self.cadence_s, self.max_time_s, self.method = cadence_s, max_time_s, method
        self.before_tick = before_tick  # called (index) just before each tick is fired
        self.ticks: list[Tick] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.t0 = 0.0
        self.scheduler: Optional[threading.Thread] = None

    def command(self) -> list[str]:
        return ["curl", "-fsS", "-X", self.method, self.url, "-H", f"Authorization: Bearer {SECRET}",
                "--max-time", f"{self.max_time_s:g}"]

    def shown(self) -> str:
        return (f"curl -fsS -X {self.method} \"{self.url}\" -H \"Authorization: Bearer $CRON_SECRET\" "
                f"--max-time {self.max_time_s:g}   every {self.cadence_s:g} s")

    def start(self, ticks: Optional[int] = None) -> float:
        self.t0 = time.time()
        self.scheduler = threading.Thread(target=self._schedule, args=(ticks,), daemon=True)
        self.scheduler.start()
        return self.t0

    def _schedule(self, ticks: Optional[int]) -> None:
        i = 0
        while ticks is None or i < ticks:
            delay = self.t0 + i * self.cadence_s - time.time()
            if delay > 0 and self.stop_event.wait(delay):
                return
            if self.stop_event.is_set():
                return
            if self.before_tick is not None:
                self.before_tick(i)
            thread = threading.Thread(target=self._tick, args=(i,), daemon=True)
            thread.start()
            self.threads.append(thread)
            i += 1

    def _tick(self, index: int) -> None:
        tick = Tick(index, time.time())
        with self.lock:
            self.ticks.append(tick)
        started = time.monotonic()
        out = subprocess.run(self.command(), capture_output=True, text=True)
        tick.seconds, tick.exit_code = time.monotonic() - started, out.returncode
        tick.error = out.stderr.strip()[:300]
        try:
            tick.body = json.loads(out.stdout) if out.stdout.strip() else None
        except ValueError:
            tick.error = (tick.error + " body: " + out.stdout[:200]).strip()

    def stop(self) -> None:
        """Fire no more ticks and wait for the ones running (curl's --max-time bounds them)."""
        self.stop_event.set()
        if self.scheduler is not None:
            self.scheduler.join()
        for thread in self.threads:
            thread.join(self.max_time_s + 10)

    def finished(self) -> list[Tick]:
        with self.lock:
            return sorted(self.ticks, key=lambda t: t.index)


TICK_FIELDS = ("claimed", "succeeded", "retried", "failed", "released", "rescued", "abandoned")


def tick_row(tick: Tick, t0: float) -> str:
    body = tick.body or {}
    counts = " ".join(f"{name[:4]} {body[name]:>4}" for name in TICK_FIELDS if name in body)
    others = {k: v for k, v in body.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
              and k not in TICK_FIELDS and k not in ("duration_ms", "lost")}
    extra = (" " + " ".join(f"{k} {v}" for k, v in others.items())) if others else ""
    status = "ok" if tick.exit_code == 0 else f"curl exit {tick.exit_code}: {tick.error}"
    duration = f"{tick.seconds:6.1f} s" if tick.seconds is not None else "   ... "
    return f"  tick {tick.index:>3} at {tick.fired - t0:7.1f} s: {duration}  {counts}{extra}  {status}"


def tick_record(tick: Tick, t0: float) -> dict:
    return {"index": tick.index, "fired_s": round(tick.fired - t0, 3),
            "seconds": None if tick.seconds is None else round(tick.seconds, 3), "curl_exit": tick.exit_code,
            "error": tick.error or None,
            "answer": {k: v for k, v in (tick.body or {}).items() if k not in ("stores", "worker")},
            "stores": len((tick.body or {}).get("stores") or {})}


# --- the fake OpenAI -------------------------------------------------------------------------------------------

ACCOUNTINGS = ("auto", "openai", "max_tokens", "completion")


def fake_supports_accounting() -> bool:
    return "accounting" in inspect.signature(FakeOpenAI.__init__).parameters


def resolve_accounting(name: str) -> str:
    if name == "auto":
        return "openai" if fake_supports_accounting() else "max_tokens"
    if name == "openai" and not fake_supports_accounting():
        raise SystemExit("--accounting openai: this tests/support/fake_openai.py has no accounting= option yet; use "
                         "--accounting max_tokens (charge_max_tokens=True)")
    return name


def describe_accounting(name: str) -> str:
    return {"openai": "accounting=\"openai\": each request charged on arrival max(max_completion_tokens, input "
                      "chars / 4), nothing given back",
            "max_tokens": "charge_max_tokens=True: each request charged on arrival its prompt tokens (the fake's "
                          "count) + its max_completion_tokens, nothing given back (accounting=\"openai\" not in "
                          "this fake yet)",
            "completion": "the fake's lenient default: prompt + the completion it will produce"}[name]


def parse_fake_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--fake-option wants NAME=VALUE, got {pair!r}")
        try:
            options[name] = json.loads(value)
        except ValueError:
            options[name] = value
    return options


class Charges:
    """Every debit of the fake's token bucket, with its time: what the fake charged, whatever its rule (the bucket's
    `level` attribute is watched; refills raise it, charges lower it)."""

    def __init__(self, fake: FakeOpenAI):
        self.items: list[tuple[float, float]] = []
        bucket = getattr(fake, "tokens", None)
        if bucket is None or "level" not in vars(bucket):
            return
        items = self.items

        class Watched(type(bucket)):
            @property
            def level(self):
                return self._watched_level

            @level.setter
            def level(self, value):
                old = self.__dict__.get("_watched_level")
                if old is not None and value < old:
                    items.append((time.time(), old - value))
                self._watched_level = value

        level = vars(bucket).pop("level")
        bucket.__class__ = Watched
        bucket._watched_level = level


def make_fake(scale: Scale, accounting: str, latency_s: tuple[float, float], rpm: int, tpm: int,
              options: dict[str, Any]) -> FakeOpenAI:
    """The provider: `rpm`/`tpm` per (real) minute x k, buckets of one cron minute (the unscaled limit), so the
    burst a full bucket allows is the same share of a tick as at k = 1."""
    kwargs: dict[str, Any] = dict(rpm=int(scale.per_min(rpm)), tpm=int(scale.per_min(tpm)),
                                  latency_s=(scale.s(latency_s[0]), scale.s(latency_s[1])),
                                  request_capacity=float(rpm), token_capacity=float(tpm))
    if accounting == "openai":
        kwargs["accounting"] = "openai"
    elif accounting == "max_tokens":
        kwargs["charge_max_tokens"] = True
    kwargs.update(options)
    return FakeOpenAI(**kwargs)


def per_minute(times: list[float], t0: float, minute_s: float, minutes: int) -> list[int]:
    counts = [0] * minutes
    for t in times:
        m = int((t - t0) // minute_s)
        if 0 <= m < minutes:
            counts[m] += 1
    return counts


def per_minute_sum(items: list[tuple[float, float]], t0: float, minute_s: float, minutes: int) -> list[float]:
    sums = [0.0] * minutes
    for t, value in items:
        m = int((t - t0) // minute_s)
        if 0 <= m < minutes:
            sums[m] += value
    return sums


def provider_minutes(fake: FakeOpenAI, charges: Charges, t0: float, minute_s: float, minutes: int) -> dict:
    calls = fake.snapshot()
    ok = [c for c in calls if c.status == 200]
    return {
        "requests": per_minute([c.at for c in ok], t0, minute_s, minutes),
        "throttled_429": per_minute([c.at for c in calls if c.status == 429], t0, minute_s, minutes),
        "other_errors": per_minute([c.at for c in calls if c.status not in (200, 429)], t0, minute_s, minutes),
        "usage_tokens": [int(x) for x in per_minute_sum([(c.at, c.total_tokens) for c in ok], t0, minute_s,
                                                        minutes)],
        "charged_tokens": [int(x) for x in per_minute_sum(charges.items, t0, minute_s, minutes)]
        if charges.items else None,
    }


# --- load and results ------------------------------------------------------------------------------------------

class LoadSampler:
    """The 1-minute load average every 5 s while a run lasts (the machine is shared)."""

    def __init__(self, every_s: float = 5.0):
        self.every_s, self.samples = every_s, [os.getloadavg()[0]]
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        return {"min": round(min(self.samples), 2), "mean": round(sum(self.samples) / len(self.samples), 2),
                "max": round(max(self.samples), 2), "cores": os.cpu_count()}

    def line(self) -> str:
        s = self.summary()
        return (f"load average (1 min) during the run: min {s['min']}, mean {s['mean']}, max {s['max']} "
                f"on {s['cores']} cores")


def write_results(name: str, tag: str, data: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tag)
    path = RESULTS_DIR / f"tick_{name}_{safe}.json"
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


@dataclass
class RunInfo:
    """What every results file starts with."""

    command: str
    commit: str = field(default_factory=git_commit)
    started_utc: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
