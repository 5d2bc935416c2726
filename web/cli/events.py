"""`relay events …`: find events, see why they failed, replay them, count them, purge them."""

from __future__ import annotations

import json
import signal

import click
from flask import current_app
from flask.cli import with_appcontext

from operations import purge as purging
from operations.events import event_detail, list_events
from operations.filters import EventFilter
from operations.stats import collect_stats
from relay.durations import human_duration
from relay.models import DeliveryStatus, Lane
from relay.runtime import Runtime
from web.cli.audit import cli_actor
from web.cli.filters import filter_options
from web.cli.replay import replay_command
from web.cli.support import Duration, When, console, store_errors, styled


@click.group("events")
def events_group():
    """Inspect, replay, count and purge received events."""


events_group.add_command(replay_command)


@events_group.command("list")
@filter_options
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="At most this many events, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@click.option(
    "--follow",
    is_flag=True,
    help="Then keep printing new events and delivery outcomes, one line each (times in UTC), "
    "until Ctrl-C. Takes --type and --destination; --since limits only the list.",
)
@with_appcontext
@store_errors
def events_list(filters: EventFilter, limit: int, as_json: bool, follow: bool):
    """List events, newest first, with their deliveries and last errors."""
    runtime = Runtime.of(current_app)
    follower = _follower(runtime, filters, as_json) if follow else None
    events = list_events(runtime, filters, limit)
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    from rich.table import Table

    table = Table("id", "type", "status", "received (UTC)", "deliveries", "last error")
    for e in events:
        deliveries = ", ".join(f"{d['destination']} {_status(d)} ({_attempts(d)})" for d in e["deliveries"])
        errors = "; ".join(
            f"{d['destination']}: {d['last_error']}"
            for d in e["deliveries"]
            if d["last_error"] and d["status"] != DeliveryStatus.SUCCEEDED
        )
        table.add_row(str(e["id"]), e["type"], styled(e["status"]), e["received_at"][:19], deliveries or "-", errors)
    console().print(table)
    if not events:
        click.echo("no event matches")
    if follower is not None:
        _follow(follower)


def _follower(runtime: Runtime, filters: EventFilter, as_json: bool):
    """What --follow watches, looked at before the list is read (so nothing falls between)."""
    from operations.follow import Follower

    refused = [
        option
        for option, given in (
            ("--json", as_json),
            ("--status", filters.statuses),
            ("--until", filters.until),
            ("--error", filters.error),
        )
        if given
    ]
    if refused:
        raise click.UsageError(
            f"--follow cannot be combined with {refused[0]}: it follows every new event "
            "and outcome of the --type and --destination given"
        )
    return Follower(runtime, EventFilter(types=filters.types, destination=filters.destination))


def _follow(follower) -> None:
    from web.cli.follow import follow

    click.echo("following new events and delivery outcomes (times in UTC; Ctrl-C stops)")
    # Ctrl-C stops it even where it was started with SIGINT ignored or blocked (a shell's
    # background job, a process that starts it with its own signal mask), as `relay dev` does.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        follow(follower, click.echo)
    except KeyboardInterrupt:
        click.echo("stopped following")
    finally:
        signal.signal(signal.SIGINT, previous)


@events_group.command("show")
@click.argument("event_id", type=int)
@click.option("--reveal", is_flag=True, help="Show the payload's personal data (names, emails, addresses) unmasked.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_appcontext
@store_errors
def events_show(event_id: int, reveal: bool, as_json: bool):
    """Show one event: its stored payload (personal data masked) and every delivery, with each
    of its attempts."""
    runtime = Runtime.of(current_app)
    detail = event_detail(runtime, event_id, reveal=reveal, actor=cli_actor(runtime))
    if detail is None:
        raise click.BadParameter(f"no event with id {event_id}", param_hint="EVENT_ID")
    payload = detail["payload"]
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    out = console()
    out.print(
        f"Event {detail['id']}  {detail['type']}  {styled(detail['status'])}  "
        f"source {detail['source']}  received {detail['received_at'][:19]} UTC"
    )
    for d in detail["deliveries"]:
        out.print(
            f"\n  delivery {d['id']} → {d['destination']}: {_status(d)}, "
            f"{_attempts(d)}, last HTTP status {d['last_status_code'] or '-'}"
        )
        if d["held"]:
            held = d["held"]
            since, reason = held["held_at"][:19].replace("T", " "), f": {held['reason']}" if held["reason"] else ""
            out.print(
                f"    {d['destination']} is held since {since} UTC by {held['held_by']}{reason}",
                markup=False,
                soft_wrap=True,
            )
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
            done = ", ".join(
                step if result is True else f"{step} ({result})" for step, result in sorted(d["progress"].items())
            )
            out.print(f"    finished steps: {done}", markup=False)
        if d["attempt_history"]:
            out.print("    attempts (UTC):")
            for attempt in d["attempt_history"]:
                out.print(f"      {_attempt_line(attempt)}", markup=False, soft_wrap=True)
                if attempt["error"]:
                    out.print(f"        {attempt['error']}", markup=False)
    if detail["validation_errors"]:
        out.print("\nValidation errors:", json.dumps(detail["validation_errors"], indent=2), markup=False)
    note = "" if reveal else "  (personal data masked; --reveal shows it)"
    out.print(f"\nPayload{note}:")
    out.print(json.dumps(payload, indent=2), markup=False)


@events_group.command("stats")
@click.option(
    "--since",
    type=When(),
    default="24h",
    show_default=True,
    metavar="WHEN",
    help="The window for the counts, failures and top errors: an age like 24h or an ISO date.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_appcontext
@store_errors
def events_stats(since, as_json: bool):
    """Counts per status and type of the events received in the window, the oldest pending
    delivery, recent failures and top errors, and each vendor's throttle and circuit breaker."""
    from web.cli.stats import print_stats

    stats = collect_stats(Runtime.of(current_app), since)
    if as_json:
        click.echo(json.dumps(stats, indent=2, default=str))
        return
    print_stats(stats, console())


@events_group.command("purge")
@click.option(
    "--older-than", type=Duration(), metavar="AGE", help="Delete finished events received more than AGE ago (e.g. 30d)."
)
@click.option(
    "--retention",
    is_flag=True,
    help="Use the configured ages instead: RELAY_RETENTION, and RELAY_RETENTION_FAILED "
    "for failed and invalid events (what beat runs daily unless RELAY_RETENTION_PURGE=off).",
)
@click.option(
    "--include-failed",
    is_flag=True,
    help="Purge failed and invalid events at the same age (they are kept longer otherwise).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
@store_errors
def events_purge(older_than, retention: bool, include_failed: bool, dry_run: bool, yes: bool):
    """Delete finished events (done, failed, invalid, unhandled) and their deliveries, in
    batches. Events still being delivered are never purged."""
    if (older_than is None) == (not retention):
        raise click.UsageError("give either --older-than AGE or --retention")
    runtime = Runtime.of(current_app)
    plan = purging.plan_purge(runtime, older_than_s=None if retention else older_than, include_failed=include_failed)
    ages, count = plan.ages, plan.count
    scope = f"finished events older than {human_duration(ages.finished_s)}" + (
        "" if ages.failed_s == ages.finished_s else f" (failed and invalid: older than {human_duration(ages.failed_s)})"
    )
    if dry_run or not count:
        click.echo(f"{count} {scope} {'would be' if dry_run else 'to be'} purged")
        return
    if not yes:
        click.confirm(f"Delete {count} {scope}?", abort=True)
    recorded_as = "relay events purge --retention" if retention and not include_failed else None
    result = purging.purge(runtime, ages, actor=cli_actor(runtime), recorded_as=recorded_as)
    click.echo(f"purged {result.purged} {scope}")


_LABELS = {"throttle_slot_at": "throttle slot reserved for"}


def _status(delivery: dict) -> str:
    """A pending delivery of a held destination reads `held` (operations.destinations)."""
    return "[yellow]held[/]" if delivery["held"] else styled(delivery["status"])


def _attempts(delivery: dict) -> str:
    text = f"{delivery['attempts']} attempt{'' if delivery['attempts'] == 1 else 's'}"
    return text + (f", {delivery['deferrals']} deferred" if delivery["deferrals"] else "")


def _attempt_line(attempt: dict) -> str:
    """One attempt, its error aside: `2  2026-12-07 13:40:01  retried  HTTP 500  req r_1  120 ms  …`."""
    parts = [
        str(attempt["attempt"]),
        f"{attempt['started_at'][:10]} {attempt['started_at'][11:19]}",
        attempt["outcome"],
        f"HTTP {attempt['vendor_status']}" if attempt["vendor_status"] else "no answer",
    ]
    if attempt["vendor_request_id"]:
        parts.append(f"req {attempt['vendor_request_id']}")
    parts.append(f"{attempt['duration_ms']} ms")
    limits = attempt["rate_limits"]
    if limits.get("remaining") is not None:
        parts.append(f"{limits['remaining']}/{limits.get('limit', '?')} calls left")
    if limits.get("daily_remaining") is not None:
        parts.append(f"{limits['daily_remaining']}/{limits.get('daily_limit', '?')} today")
    if attempt["steps"]:
        parts.append(f"finished {', '.join(attempt['steps'])}")
    return "  ".join(parts)
