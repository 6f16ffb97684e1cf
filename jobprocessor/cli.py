"""`flask --app wsgi jobs ...`: the same functions the HTTP API calls, for cron without HTTP and for operators."""
from __future__ import annotations

import json
import re

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .enqueue import InvalidJob, enqueue_many
from .extensions import db
from .processor import process_pending



class _JobsGroup(AppGroup):
    """An unreachable database is one line (naming the host, never the password), not a traceback."""

    def invoke(self, ctx):
        from sqlalchemy.exc import OperationalError

        try:
            return super().invoke(ctx)
        except OperationalError as exc:
            url = db.engine.url
            reason = " ".join(str(exc.orig).split())[:300] if exc.orig is not None else type(exc).__name__
            raise click.ClickException(f"the database at {url.host}:{url.port or 5432}/{url.database} is "
                                       f"unreachable: {reason}") from None


jobs_cli = _JobsGroup("jobs", help="Enqueue and process jobs.")


def _settings():
    return current_app.extensions["jobprocessor"].settings


def _priority(text: str):
    """--priority: a name, or ASCII digits as a number ("²".isdigit() is true, int("²") a crash); the enqueue
    validation then says what is allowed."""
    return int(text) if re.fullmatch(r"[0-9]{1,3}", text) else text


@jobs_cli.command("enqueue")
@click.argument("job_type")
@click.option("--payload", default="{}", help="JSON object")
@click.option("--store-id")
@click.option("--user-id")
@click.option("--priority", default="normal", help="urgent, high, normal, low or 1..10")
@click.option("--run-at", help="ISO 8601 date-time")
@click.option("--max-attempts", type=int)
@click.option("--idempotency-key")
@click.option("--batch-id")
@click.option("--depends-on", "depends_on", type=click.IntRange(1), multiple=True,
              help="id of a job this one waits for (repeat the option for several)")
@click.option("--depends-on-batch", help="wait for every job of this batch")
@click.option("--on-parent-failure", type=click.Choice(["cancel", "run"]), help="default: cancel")
@click.option("--singleton-key", help="at most one unfinished job per key (an existing one is returned)")
@click.option("--debounce", "debounce_s", type=click.FloatRange(0), help="seconds (with --singleton-key)")
@click.option("--count", default=1, show_default=True, help="enqueue this many copies")
def enqueue_command(job_type, payload, store_id, user_id, priority, run_at, max_attempts, idempotency_key, batch_id,
                    depends_on, depends_on_batch, on_parent_failure, singleton_key, debounce_s, count):
    """Enqueue COUNT jobs of JOB_TYPE."""
    try:
        payload_obj = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload")
    job = {"type": job_type, "payload": payload_obj, "store_id": store_id, "user_id": user_id,
           "priority": _priority(priority), "run_at": run_at,
           "max_attempts": max_attempts, "idempotency_key": idempotency_key, "batch_id": batch_id,
           "depends_on": list(depends_on) or None, "depends_on_batch": depends_on_batch,
           "on_parent_failure": on_parent_failure, "singleton_key": singleton_key, "debounce_s": debounce_s}
    job = {k: v for k, v in job.items() if v is not None}
    ids = []
    try:
        for start in range(0, count, 1000):
            ids += [job_id for job_id, _ in enqueue_many([job] * min(1000, count - start))]
    except InvalidJob as exc:
        raise click.ClickException(exc.message)
    click.echo(json.dumps({"enqueued": len(ids), "first_id": ids[0], "last_id": ids[-1]}))


@jobs_cli.command("show")
@click.argument("job_id", type=click.IntRange(1))
def show_command(job_id):
    """Print one job as JSON, with its parents, children and steps (what GET /jobs/<id> returns)."""
    from . import queries
    from .api.job_json import job_to_dict
    from .workflows import graph

    with db.engine.connect() as conn:
        job = queries.get_job(conn, job_id)
        if job is None:
            raise click.ClickException(f"no job {job_id}")
        click.echo(json.dumps({**job_to_dict(job), **graph.read(conn, job_id)}, indent=2, default=str))


@jobs_cli.command("process")
@click.option("--limit", type=click.IntRange(1, 1_000_000), help="default: JOBS_MAX_PER_RUN")
@click.option("--budget", "budget_s", type=click.FloatRange(1, 900), help="seconds; default: JOBS_MAX_RUNTIME_S")
@click.option("--type", "job_type", help="only jobs of this type")
def process_command(limit, budget_s, job_type):
    """Claim and run due jobs once (the same code path as POST /process-pending)."""
    settings = _settings()
    summary = process_pending(db.engine, settings, limit=limit or settings.JOBS_MAX_PER_RUN,
                              budget_s=budget_s or settings.JOBS_MAX_RUNTIME_S, job_type=job_type,
                              app=current_app._get_current_object())
    click.echo(json.dumps(summary.to_dict()))


@jobs_cli.command("demo")
@click.option("--count", default=20, show_default=True)
def demo_command(count):
    """Enqueue sample jobs across a few stores (needs JOBPROCESSOR_HANDLERS=jobprocessor.handlers.demo). The same
    COUNT jobs however often it runs (idempotency keys demo:1 ... demo:COUNT): `make demo` runs it at every start."""
    import jobprocessor.handlers.demo  # noqa: F401 - registers the demo types in this process

    kinds = [("demo.echo", {"hello": "world"}), ("demo.sleep", {"seconds": 0.5}), ("demo.flaky", {"fail_rate": 0.3}),
             ("demo.rate_limited", {"seconds": 30}), ("demo.invalid", {})]
    # a few urgent jobs (they go first), the rest normal and spread over four stores (they share the slots fairly)
    jobs = [{"type": kinds[i % len(kinds)][0], "payload": kinds[i % len(kinds)][1], "store_id": f"store-{i % 4}",
             "priority": "urgent" if i % 10 == 0 else "normal", "idempotency_key": f"demo:{i + 1}"}
            for i in range(count)]
    results = []
    for start in range(0, count, 1000):
        results += enqueue_many(jobs[start:start + 1000])
    created = sum(1 for _, was_created in results if was_created)
    click.echo(json.dumps({"enqueued": created, "already_there": len(results) - created}))


# --- operators: health, cleanup, schedules -------------------------------------------------------------------------

def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


@jobs_cli.command("health")
@click.option("--json", "as_json", is_flag=True, help="print JSON (what GET /queue/health returns)")
def health_command(as_json):
    """The queue per status (job_queue_health) and the alerts firing now (job_queue_alerts)."""
    from . import queue_health

    report = queue_health.read(db.engine)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(_table(report.statuses, ["status", "count", "avg_duration_seconds", "oldest_age_seconds",
                                        "oldest_created_at", "latest_created_at"]))
    click.echo("")
    if report.alerts:
        click.echo(_table(report.alerts, ["severity", "alert", "value", "threshold", "message"]))
    else:
        click.echo("No alerts firing.")
    click.echo(f"\nstatus: {report.status}")


@jobs_cli.command("ticks")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON (what GET /ticks returns)")
def ticks_command(limit, as_json):
    """What the latest /process-pending calls did (job_ticks), newest first."""
    from . import ticks

    with db.engine.connect() as conn:
        rows = ticks.recent(conn, limit=limit)
        age = ticks.last_tick_age_s(conn)
    if as_json:
        click.echo(json.dumps({"ticks": rows, "last_tick_age_s": age}, default=str))
        return
    if not rows:
        click.echo("No tick recorded yet: is the cron calling /process-pending?")
        return
    click.echo(_table(rows, ["id", "started_at", "duration_s", "rounds", "claimed", "succeeded", "retried", "failed",
                             "released", "rescued", "abandoned", "busy_s", "worker"]))
    click.echo(f"\nlast tick started {age:.0f} s ago")


@jobs_cli.command("cleanup")
@click.option("--completed-days", type=click.FloatRange(0, 36500),
              help="archive completed jobs older than this; default JOBS_CLEANUP_KEEP_COMPLETED_DAYS")
@click.option("--failed-days", type=click.FloatRange(0, 36500),
              help="delete failed/cancelled jobs older than this; default JOBS_CLEANUP_KEEP_FAILED_DAYS")
@click.option("--batch-size", type=click.IntRange(100, 1000000), help="default JOBS_CLEANUP_BATCH_SIZE")
@click.option("--budget", "budget_s", type=click.FloatRange(1, 86400), default=3600, show_default=True,
              help="stop starting batches after this many seconds")
def cleanup_command(completed_days, failed_days, batch_size, budget_s):
    """Archive old completed jobs and delete old failed ones, one short transaction per batch."""
    from datetime import timedelta

    from .maintenance.cleaner import Cleaner, CleanerConfig

    config = CleanerConfig.from_settings(
        _settings(), completed_older_than=None if completed_days is None else timedelta(days=completed_days),
        failed_older_than=None if failed_days is None else timedelta(days=failed_days), batch_size=batch_size)
    click.echo(json.dumps(Cleaner(db.engine, config).run_once(budget_s=budget_s).as_dict()))


@jobs_cli.command("rescue")
@click.option("--max-passes", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="passes of at most JOBS_RESCUE_LIMIT leases each, until one finds fewer")
def rescue_command(max_passes):
    """Give back now the jobs whose lease ran out, in passes of JOBS_RESCUE_LIMIT (every claim round also rescues
    up to that many)."""
    from .maintenance.rescuer import Rescuer, RescuerConfig

    rescuer = Rescuer(db.engine, RescuerConfig.from_settings(_settings()))
    click.echo(json.dumps(rescuer.run_until_done(max_passes).as_dict()))


@jobs_cli.group("schedule")
def schedule_cli():
    """Recurring jobs: list, add, enable, disable, remove, run (5-field cron, UTC)."""


@schedule_cli.command("list")
def schedule_list():
    from . import schedules

    rows = schedules.list_schedules(db.engine)
    if not rows:
        click.echo("No schedules.")
        return
    for row in rows:
        row["payload"] = json.dumps(row["payload"])
    click.echo(_table(rows, ["name", "cron", "job_type", "enabled", "next_run_at", "last_enqueued_at", "priority",
                             "payload"]))


@schedule_cli.command("add")
@click.argument("name")
@click.argument("cron")
@click.argument("job_type")
@click.option("--payload", default="{}", help="JSON object")
@click.option("--priority", default="normal", help="urgent, high, normal, low or 1..10")
@click.option("--disabled", is_flag=True, help="create it switched off")
def schedule_add(name, cron, job_type, payload, priority, disabled):
    """Add schedule NAME running JOB_TYPE at CRON (e.g. '*/15 * * * *', quoted)."""
    from . import schedules
    from .policies.cron_expr import CronError

    try:
        payload_obj = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload")
    try:
        row = schedules.add_schedule(db.engine, _settings(), name=name, cron=cron, job_type=job_type,
                                     payload=payload_obj, priority=_priority(priority),
                                     enabled=not disabled)
    except CronError as exc:
        raise click.BadParameter(str(exc), param_hint="CRON")
    except InvalidJob as exc:
        raise click.ClickException(exc.message)
    if row is None:
        raise click.ClickException(f"a schedule named {name!r} exists already (remove it first)")
    click.echo(json.dumps(row))


def _switch(name: str, enabled: bool) -> None:
    from . import schedules

    row = schedules.set_enabled(db.engine, name, enabled)
    if row is None:
        raise click.ClickException(f"no schedule named {name!r}")
    click.echo(json.dumps(row))


@schedule_cli.command("enable")
@click.argument("name")
def schedule_enable(name):
    """Switch NAME on; its next run is the next slot from now."""
    _switch(name, True)


@schedule_cli.command("disable")
@click.argument("name")
def schedule_disable(name):
    _switch(name, False)


@schedule_cli.command("remove")
@click.argument("name")
def schedule_remove(name):
    from . import schedules

    if not schedules.remove_schedule(db.engine, name):
        raise click.ClickException(f"no schedule named {name!r}")
    click.echo(json.dumps({"removed": name}))


@schedule_cli.command("run")
def schedule_run():
    """Enqueue now the jobs of the schedules whose slot has come (every /process-pending call also does this)."""
    from .maintenance.scheduler import Scheduler

    click.echo(json.dumps(Scheduler(db.engine, _settings()).run_once().as_dict()))


# --- tenant flow control: pauses, limits, why a job waits ---------------------------------------------------------

def _flow_call(action):
    """Run action(conn) in one transaction; a bad value is a one-line error naming the field."""
    from .flow import InvalidFlowInput

    try:
        with db.engine.begin() as conn:
            return action(conn)
    except InvalidFlowInput as exc:
        raise click.ClickException(exc.message)


def _cli_actor():
    """Who changes flow control from a shell, for the action log: the CLI and the OS user (as `flask jobs retry`)."""
    from .bulk.cli import _actor

    return _actor()


@jobs_cli.command("pause")
@click.option("--type", "job_type", help="the job type to pause (with --store: only in that store)")
@click.option("--store", "store_id", help="the store to pause (every type, unless --type)")
def pause_command(job_type, store_id):
    """Pause a job type, a store, or one type of one store: claims take none of its jobs from their next round;
    running jobs finish."""
    from .flow import pauses

    def add(conn):
        valid_type, valid_store = pauses.validate({"type": job_type, "store_id": store_id})
        return pauses.add_pause(conn, job_type=valid_type, store_id=valid_store, actor=_cli_actor())

    pause, created = _flow_call(add)
    click.echo(json.dumps({**pause, "created": created}))


@jobs_cli.command("resume")
@click.argument("pause_id", type=int, required=False)
@click.option("--type", "job_type", help="the paused type (instead of PAUSE_ID)")
@click.option("--store", "store_id", help="the paused store (instead of PAUSE_ID)")
def resume_command(pause_id, job_type, store_id):
    """Remove a pause: by PAUSE_ID (see `flask jobs pauses`), or the one of --type / --store."""
    from .flow import pauses

    def resume(conn):
        found = pause_id
        if found is None:
            if job_type is None and store_id is None:
                raise click.UsageError("give PAUSE_ID, or --type and/or --store")
            pause = pauses.find_pause(conn, job_type=job_type, store_id=store_id)
            found = pause["id"] if pause else None
        if found is None or not pauses.remove_pause(conn, found, actor=_cli_actor()):
            raise click.ClickException("no such pause")
        return found

    click.echo(json.dumps({"resumed": _flow_call(resume)}))


@jobs_cli.command("pauses")
@click.option("--json", "as_json", is_flag=True, help="print JSON (what GET /pauses returns)")
def pauses_command(as_json):
    """The pauses in force."""
    from .flow import pauses

    rows = _flow_call(pauses.list_pauses)
    if as_json:
        click.echo(json.dumps({"pauses": rows}))
    elif rows:
        click.echo(_table(rows, ["id", "type", "store_id", "created_at"]))
    else:
        click.echo("No pauses.")


@jobs_cli.group("limits", invoke_without_command=True)
@click.option("--store", "store_id", help="only this store's rows (and the every-store ones), and what applies")
@click.option("--json", "as_json", is_flag=True, help="print JSON (what GET /limits returns)")
@click.pass_context
def limits_cli(ctx, store_id, as_json):
    """Per-store limits and weights: list them (no subcommand), set, remove."""
    if ctx.invoked_subcommand is not None:
        return
    from .flow import limits

    def read(conn):
        body = {"limits": limits.list_limits(conn, store_id=store_id)}
        if store_id is not None:
            body["effective"] = limits.effective_limits(conn, store_id)
        return body

    body = _flow_call(read)
    if as_json:
        click.echo(json.dumps(body))
        return
    columns = ["store_id", "type", *limits.FIELDS, "updated_at"]
    click.echo(_table(body["limits"], columns) if body["limits"] else "No limits set.")
    if "effective" in body:
        click.echo(f"\napplies to store {store_id} now:")
        click.echo(_table(body["effective"], ["type", "max_running", "max_starts_per_minute", "weight",
                                              "openai_tokens_per_minute", "running", "started_last_minute"])
                   if body["effective"] else "nothing")


@limits_cli.command("set")
@click.option("--store", "store_id", help="the store; left out: every store (each on its own)")
@click.option("--type", "job_type", help="only this type of the store")
@click.option("--max-running", type=int, help="jobs running at once (live leases)")
@click.option("--max-starts-per-minute", type=int, help="jobs claimed in any 60 s")
@click.option("--weight", type=int, help="jobs per round of the fair claim (per store)")
@click.option("--openai-tokens-per-minute", type=int, help="the store's share of the OpenAI tokens/min")
def limits_set(store_id, job_type, max_running, max_starts_per_minute, weight, openai_tokens_per_minute):
    """Set the row of (store, type), replacing what it held (what is left out is no longer set there)."""
    from .flow import limits

    body = {"store_id": store_id, "type": job_type, "max_running": max_running,
            "max_starts_per_minute": max_starts_per_minute, "weight": weight,
            "openai_tokens_per_minute": openai_tokens_per_minute}
    stored, created = _flow_call(lambda conn: limits.put_limit(conn, limits.validate(body), actor=_cli_actor()))
    click.echo(json.dumps({**stored, "created": created}))


@limits_cli.command("remove")
@click.option("--store", "store_id", help="the store; left out: the every-store row")
@click.option("--type", "job_type", help="the type of the row")
def limits_remove(store_id, job_type):
    """Remove the row of (store, type)."""
    from .flow import limits

    if not _flow_call(lambda conn: limits.delete_limit(conn, store_id=store_id, job_type=job_type,
                                                      actor=_cli_actor())):
        raise click.ClickException("no such limit")
    click.echo(json.dumps({"removed": {"store_id": store_id, "type": job_type}}))


@jobs_cli.command("wait")
@click.argument("job_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--json", "as_json", is_flag=True, help="print JSON (what GET /jobs/<id>/wait returns)")
def wait_command(job_id, as_json):
    """Why job JOB_ID is waiting (or what holds it)."""
    from .flow import wait
    from .handler_registry import registered_types

    with db.engine.connect() as conn:
        body = wait.wait_reasons(conn, job_id, registered_types())
    if body is None:
        raise click.ClickException(f"no job {job_id}")
    if as_json:
        click.echo(json.dumps(body))
        return
    click.echo(f"job {job_id}: {body['status']}")
    for reason in body["reasons"]:
        until = f" (until {reason['until']})" if "until" in reason else ""
        click.echo(f"  {reason['code']}: {reason['message']}{until}")


def register_cli(app: Flask) -> None:
    from .bulk.cli import register as register_bulk

    register_bulk(jobs_cli)  # jobs retry|cancel
    app.cli.add_command(jobs_cli)
