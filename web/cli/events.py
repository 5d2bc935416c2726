"""`relay events …`: find events, see why they failed, replay them, count them, purge them."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.orm import selectinload

from relay.db import session_scope
from relay.models import DeliveryStatus, Event, Lane, utcnow
from web.cli.filters import EventFilter, filter_options
from web.cli.masking import mask_personal_data
from web.cli.replay import replay_command
from web.cli.support import Duration, When, console, human_duration, store_errors, styled
from workers.retention import Ages, purge, purge_count, record_run


@click.group("events")
def events_group():
    """Inspect, replay, count and purge received events."""


events_group.add_command(replay_command)


@events_group.command("list")
@filter_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="At most this many events, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@click.option("--follow", is_flag=True,
              help="Then keep printing new events and delivery outcomes, one line each (times in UTC), "
                   "until Ctrl-C. Takes --type and --destination; --since limits only the list.")
# Bounded for tests: stop after this many polls of the store.
@click.option("--polls", type=click.IntRange(1, 1000), hidden=True)
@with_appcontext
@store_errors
def events_list(filters: EventFilter, limit: int, as_json: bool, follow: bool, polls: int | None):
    """List events, newest first, with their deliveries and last errors."""
    follower = _follower(filters, as_json) if follow else None
    with session_scope() as session:
        events = [event_summary(e) for e in session.scalars(list_query(filters, limit))]
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    from rich.table import Table

    table = Table("id", "type", "status", "received (UTC)", "deliveries", "last error")
    for e in events:
        deliveries = ", ".join(f"{d['destination']} {styled(d['status'])} ({_attempts(d)})"
                               for d in e["deliveries"])
        errors = "; ".join(f"{d['destination']}: {d['last_error']}" for d in e["deliveries"]
                           if d["last_error"] and d["status"] != DeliveryStatus.SUCCEEDED)
        table.add_row(str(e["id"]), e["type"], styled(e["status"]), e["received_at"][:19],
                      deliveries or "-", errors)
    console().print(table)
    if not events:
        click.echo("no event matches")
    if follower is not None:
        _follow(follower, polls)


def _follower(filters: EventFilter, as_json: bool):
    """What --follow watches, looked at before the list is read (so nothing falls between)."""
    from web.cli.follow import Follower

    refused = [option for option, given in (("--json", as_json), ("--status", filters.statuses),
                                            ("--until", filters.until), ("--error", filters.error)) if given]
    if refused:
        raise click.UsageError(f"--follow cannot be combined with {refused[0]}: it follows every new event "
                               "and outcome of the --type and --destination given")
    return Follower(session_scope, EventFilter(types=filters.types, destination=filters.destination))


def _follow(follower, polls: int | None) -> None:
    from web.cli.follow import follow, stop_after

    click.echo("following new events and delivery outcomes (times in UTC; Ctrl-C stops)")
    try:
        follow(follower, click.echo, stop_after(polls))
    except KeyboardInterrupt:
        click.echo("stopped following")


def list_query(filters: EventFilter, limit: int) -> sa.Select:
    """What `relay events list` loads: the newest `limit` matching events, with their deliveries.

    The ids are chosen first, then only those events are read: choosing ids can use an index
    alone (ix_events_id_received skips the newer events for --until) where choosing whole rows
    read each newer event from the table (0.4 s for --until 30d among a million events)."""
    newest = filters.apply(sa.select(Event.id)).order_by(Event.id.desc()).limit(limit)
    return (sa.select(Event).where(Event.id.in_(newest)).options(selectinload(Event.deliveries))
            .order_by(Event.id.desc()))


@events_group.command("show")
@click.argument("event_id", type=int)
@click.option("--reveal", is_flag=True,
              help="Show the payload's personal data (names, emails, addresses) unmasked.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_appcontext
@store_errors
def events_show(event_id: int, reveal: bool, as_json: bool):
    """Show one event: its stored payload (personal data masked) and every delivery."""
    with session_scope() as session:
        event = session.get(Event, event_id, options=[selectinload(Event.deliveries)])
        if event is None:
            raise click.BadParameter(f"no event with id {event_id}", param_hint="EVENT_ID")
        detail = event_summary(event, full=True)
        payload = event.payload if reveal else mask_personal_data(event.payload)
    detail |= {"payload": payload, "validation_errors": event.errors}
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    out = console()
    out.print(f"Event {detail['id']}  {detail['type']}  {styled(detail['status'])}  "
              f"source {detail['source']}  received {detail['received_at'][:19]} UTC")
    for d in detail["deliveries"]:
        out.print(f"\n  delivery {d['id']} → {d['destination']}: {styled(d['status'])}, "
                  f"{_attempts(d)}, last HTTP status {d['last_status_code'] or '-'}")
        if d["lane"] == Lane.CATCH_UP:
            out.print("    catch-up work: replay queue, throttle slots live traffic leaves")
        for label in ("created_at", "next_attempt_at", "throttle_slot_at", "finished_at", "replayed_at"):
            if d.get(label):
                out.print(f"    {_LABELS.get(label, label.replace('_', ' '))}: {d[label][:19]}")
        if d["last_error"]:
            label = "last error" if d["status"] != DeliveryStatus.SUCCEEDED else "earlier error (since resolved)"
            out.print(f"    {label}: {d['last_error']}", markup=False)
            for frame in reversed(d["last_error_trace"] or []):
                out.print(f"      at {frame}", markup=False)
        if d["progress"]:
            done = ", ".join(step if result is True else f"{step} ({result})"
                             for step, result in sorted(d["progress"].items()))
            out.print(f"    finished steps: {done}", markup=False)
    if detail["validation_errors"]:
        out.print("\nValidation errors:", json.dumps(detail["validation_errors"], indent=2), markup=False)
    note = "" if reveal else "  (personal data masked; --reveal shows it)"
    out.print(f"\nPayload{note}:")
    out.print(json.dumps(payload, indent=2), markup=False)


@events_group.command("stats")
@click.option("--since", type=When(), default="24h", show_default=True, metavar="WHEN",
              help="The window for the counts, failures and top errors: an age like 24h or an ISO date.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_appcontext
@store_errors
def events_stats(since, as_json: bool):
    """Counts per status and type of the events received in the window, the oldest pending
    delivery, recent failures and top errors, and each vendor's throttle and circuit breaker."""
    from web.cli.stats import collect_stats, print_stats

    stats = collect_stats(since)
    if as_json:
        click.echo(json.dumps(stats, indent=2, default=str))
        return
    print_stats(stats, console())


@events_group.command("purge")
@click.option("--older-than", type=Duration(), metavar="AGE",
              help="Delete finished events received more than AGE ago (e.g. 30d).")
@click.option("--retention", is_flag=True,
              help="Use the configured ages instead: RELAY_RETENTION, and RELAY_RETENTION_FAILED "
                   "for failed and invalid events (what beat runs daily unless RELAY_RETENTION_PURGE=off).")
@click.option("--include-failed", is_flag=True,
              help="Purge failed and invalid events at the same age (they are kept longer otherwise).")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
@store_errors
def events_purge(older_than, retention: bool, include_failed: bool, dry_run: bool, yes: bool):
    """Delete finished events (done, failed, invalid, unhandled) and their deliveries, in
    batches. Events still being delivered are never purged."""
    config = current_app.config["RELAY"]
    if (older_than is None) == (not retention):
        raise click.UsageError("give either --older-than AGE or --retention")
    age = config.retention_s if retention else older_than
    ages = Ages(age, age if include_failed else max(age, config.retention_failed_s))
    with session_scope() as session:
        count = purge_count(session, ages.conditions(utcnow()))
    scope = (f"finished events older than {human_duration(ages.finished_s)}"
             + ("" if ages.failed_s == ages.finished_s
                else f" (failed and invalid: older than {human_duration(ages.failed_s)})"))
    if dry_run or not count:
        click.echo(f"{count} {scope} {'would be' if dry_run else 'to be'} purged")
        return
    if not yes:
        click.confirm(f"Delete {count} {scope}?", abort=True)
    result = purge(ages)
    if retention and not include_failed:
        record_run(config, by="relay events purge --retention", result=result)
    click.echo(f"purged {result.purged} {scope}")


_LABELS = {"throttle_slot_at": "throttle slot reserved for"}


def _attempts(delivery: dict) -> str:
    text = f"{delivery['attempts']} attempt{'' if delivery['attempts'] == 1 else 's'}"
    return text + (f", {delivery['deferrals']} deferred" if delivery["deferrals"] else "")


def event_summary(event: Event, full: bool = False) -> dict:
    def when(value):
        return value.isoformat() if value else None

    summary = {
        "id": event.id, "type": event.type, "status": event.status, "source": event.source,
        "received_at": event.received_at.isoformat(),
        "deliveries": [
            {
                "id": d.id, "destination": d.destination, "status": d.status, "lane": d.lane,
                "attempts": d.attempts, "deferrals": d.deferrals,
                "last_error": d.last_error, "last_status_code": d.last_status_code,
                "next_attempt_at": when(d.next_attempt_at) if d.status == DeliveryStatus.PENDING else None,
                "finished_at": when(d.finished_at), "replayed_at": when(d.replayed_at),
            }
            for d in event.deliveries
        ],
    }
    if full:
        for summary_delivery, d in zip(summary["deliveries"], event.deliveries):
            slot = d.throttle_slot if d.status == DeliveryStatus.PENDING else None
            summary_delivery |= {
                "created_at": when(d.created_at), "progress": dict(d.progress or {}),
                "last_error_trace": d.last_error_trace,
                "throttle_slot_at": when(datetime.fromtimestamp(slot["at_ms"] / 1000, timezone.utc)) if slot else None,
            }
    return summary
