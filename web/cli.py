"""The `relay` command: a Flask CLI group bound to the app factory."""
from __future__ import annotations

import functools
import json

import click
import sqlalchemy as sa
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import selectinload

from web import create_app
from web.db import get_db, session_scope
from web.models import Event


def _cli_app():
    return create_app(require_webhook_token=False)


def _store_errors(command):
    """An unreachable or unmigrated database is one clear line and exit code 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (OperationalError, ProgrammingError) as exc:
            click.echo(f"Error: the database is unreachable or not migrated ({type(exc).__name__}); "
                       "check DATABASE_URL and run `relay db upgrade`", err=True)
            raise SystemExit(1) from None

    return wrapper


@click.group(cls=FlaskGroup, create_app=_cli_app, add_default_commands=False,
             help="Relay: SparkLoop webhooks delivered to Sprig and Spruce.")
def main():
    pass


@main.command("dev", with_appcontext=False)
@click.option("--port", default=5000, show_default=True, help="Port for the web app.")
@click.option("--sandbox-port", default=8025, show_default=True,
              help="Port for the vendor sandbox (used for vendors without credentials).")
def dev_command(port: int, sandbox_port: int):
    """Run Relay locally: web app, worker with the sweep, and the vendor sandbox."""
    from web.dev import run_dev

    run_dev(port=port, sandbox_port=sandbox_port)


@main.group("db")
def db_group():
    """Database schema commands."""


@db_group.command("upgrade")
@with_appcontext
@_store_errors
def db_upgrade():
    """Apply pending migrations (run on every release)."""
    get_db().upgrade()
    click.echo("database is up to date")


@main.group("events")
def events_group():
    """Inspect received events and their deliveries."""


@events_group.command("list")
@click.option("--status", help="Only events in this status (e.g. failed, done, invalid).")
@click.option("--type", "event_type", help="Only events of this SparkLoop type.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="At most this many events, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@with_appcontext
@_store_errors
def events_list(status, event_type, limit, as_json):
    """List events, newest first."""
    query = sa.select(Event).options(selectinload(Event.deliveries)).order_by(Event.id.desc())
    if status:
        query = query.where(Event.status == status)
    if event_type:
        query = query.where(Event.type == event_type)
    with session_scope() as session:
        events = [event_summary(e) for e in session.scalars(query.limit(limit))]
    if as_json:
        click.echo(json.dumps(events, indent=2))
    else:
        _print_table(events)


@events_group.command("show")
@click.argument("event_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_appcontext
@_store_errors
def events_show(event_id, as_json):
    """Show one event, its stored payload and its deliveries."""
    with session_scope() as session:
        event = session.get(Event, event_id, options=[selectinload(Event.deliveries)])
        if event is None:
            raise click.UsageError(f"no event with id {event_id}")
        detail = event_summary(event) | {"payload": event.payload, "errors": event.errors}
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    _print_table([detail])
    click.echo(json.dumps({"payload": detail["payload"], "errors": detail["errors"]}, indent=2))


def event_summary(event: Event) -> dict:
    return {
        "id": event.id,
        "type": event.type,
        "status": event.status,
        "received_at": event.received_at.isoformat(),
        "deliveries": [
            {
                "id": d.id,
                "destination": d.destination,
                "status": d.status,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "last_status_code": d.last_status_code,
                "next_attempt_at": d.next_attempt_at.isoformat() if d.status == "pending" else None,
                "finished_at": d.finished_at.isoformat() if d.finished_at else None,
            }
            for d in event.deliveries
        ],
    }


def _print_table(events: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "type", "status", "received", "deliveries")
    for e in events:
        deliveries = ", ".join(
            f"{d['destination']}={d['status']}({d['attempts']})" for d in e["deliveries"]
        )
        table.add_row(str(e["id"]), e["type"], e["status"], e["received_at"][:19], deliveries or "-")
    Console().print(table)
    failing = [d for e in events for d in e["deliveries"] if d["last_error"]]
    for d in failing:
        click.echo(f"  delivery {d['id']} ({d['destination']}): {d['last_error']}")
