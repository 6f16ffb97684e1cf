"""`flask --app wsgi jobs retry|cancel [--status S] [--type T] [--store-id ...] [--dry-run]`: the bulk actions of
POST /jobs/bulk from a shell, logged in the action log as the CLI's."""
from __future__ import annotations

import getpass
import json

import click

from . import BulkError, parse_request, run
from .actions import Actor


def _actor() -> Actor:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in a bare container: still say it was the shell
        user = "shell"
    return Actor("cli", user[:50] or "shell")


def _options(command):
    for option in reversed([
        click.option("--status", help="retry: failed or cancelled (default both); cancel: pending"),
        click.option("--type", "job_type", help="only jobs of this type"),
        click.option("--store-id"),
        click.option("--batch-id"),
        click.option("--error-contains", help="text in last_error (case-insensitive)"),
        click.option("--created-after", help="ISO 8601 date-time"),
        click.option("--created-before", help="ISO 8601 date-time"),
        click.option("--dry-run", is_flag=True, help="count the jobs it would change, change nothing"),
        click.option("--batch-size", type=click.IntRange(1, 10000), default=1000, show_default=True,
                     help="jobs per transaction"),
    ]):
        command = option(command)
    return command


def _run(action: str, dry_run: bool, batch_size: int, **fields) -> None:
    from ..extensions import db

    names = {"job_type": "type"}
    body = {"action": action, "dry_run": dry_run,
            "filter": {names.get(k, k): v for k, v in fields.items() if v is not None}}
    try:
        request = parse_request(body)
    except BulkError as exc:
        raise click.BadParameter(exc.message, param_hint="--" + exc.field.replace("_", "-"))

    def progress(batches: int, changed: int) -> None:
        if batches % 20 == 0:
            click.echo(f"... {changed} changed", err=True)

    result = run(db.engine, request, _actor(), batch_size=batch_size, on_batch=progress)
    answer = {"matched": result.matched} if dry_run else {"changed": result.changed, "matched": result.matched,
                                                          "action_id": result.action_id}
    click.echo(json.dumps({"action": action, "dry_run": dry_run, **answer, "filter": request.filter.as_dict()}))


def register(group: click.Group) -> None:
    @group.command("retry")
    @_options
    def retry_command(dry_run, batch_size, **fields):
        """Retry every failed or cancelled job matching the options, in batches."""
        _run("retry", dry_run, batch_size, **fields)

    @group.command("cancel")
    @_options
    def cancel_command(dry_run, batch_size, **fields):
        """Cancel every pending job matching the options, in batches."""
        _run("cancel", dry_run, batch_size, **fields)
