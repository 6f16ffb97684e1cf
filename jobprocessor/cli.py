"""`flask --app wsgi jobs ...`: the same functions the HTTP API calls, for cron without HTTP and for operators."""
from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .enqueue import InvalidJob, enqueue_many
from .extensions import db
from .processor import process_pending

jobs_cli = AppGroup("jobs", help="Enqueue and process jobs.")


def _settings():
    return current_app.extensions["jobprocessor"].settings


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
@click.option("--count", default=1, show_default=True, help="enqueue this many copies")
def enqueue_command(job_type, payload, store_id, user_id, priority, run_at, max_attempts, idempotency_key, batch_id,
                    count):
    """Enqueue COUNT jobs of JOB_TYPE."""
    try:
        payload_obj = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload")
    job = {"type": job_type, "payload": payload_obj, "store_id": store_id, "user_id": user_id,
           "priority": int(priority) if priority.isdigit() else priority, "run_at": run_at,
           "max_attempts": max_attempts, "idempotency_key": idempotency_key, "batch_id": batch_id}
    job = {k: v for k, v in job.items() if v is not None}
    ids = []
    try:
        for start in range(0, count, 1000):
            ids += [job_id for job_id, _ in enqueue_many([job] * min(1000, count - start))]
    except InvalidJob as exc:
        raise click.ClickException(exc.message)
    click.echo(json.dumps({"enqueued": len(ids), "first_id": ids[0], "last_id": ids[-1]}))


@jobs_cli.command("process")
@click.option("--limit", type=click.IntRange(1, 1000), help="default: JOBS_MAX_PER_RUN")
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
    """Enqueue sample jobs across a few stores (needs JOBPROCESSOR_HANDLERS=jobprocessor.handlers.demo)."""
    import jobprocessor.handlers.demo  # noqa: F401 - registers the demo types in this process

    kinds = [("demo.echo", {"hello": "world"}), ("demo.sleep", {"seconds": 0.5}), ("demo.flaky", {"fail_rate": 0.3}),
             ("demo.rate_limited", {"seconds": 30}), ("demo.invalid", {})]
    jobs = [{"type": kinds[i % len(kinds)][0], "payload": kinds[i % len(kinds)][1], "store_id": f"store-{i % 4}",
             "priority": ("urgent", "high", "normal", "low")[i % 4]} for i in range(count)]
    results = enqueue_many(jobs)
    click.echo(json.dumps({"enqueued": len(results)}))


def register_cli(app: Flask) -> None:
    app.cli.add_command(jobs_cli)
