"""`relay events replay`: send events again through the same engine, with the same ids
(what a replay does: operations.replay)."""

from __future__ import annotations

import time
from collections import Counter

import click
from flask import current_app
from flask.cli import with_appcontext

from operations.failures import BadGroup, FailureGroup, group_event_ids
from operations.filters import EventFilter
from operations.replay import (
    ReplayResult,
    SendingEstimate,
    delivery_statuses,
    matching_event_ids,
    missing_event_ids,
    replay,
    sending_estimates,
)
from relay.durations import human_duration
from relay.models import DeliveryStatus
from relay.runtime import Runtime
from web.cli.audit import cli_actor
from web.cli.filters import filter_options
from web.cli.support import Duration, console, store_errors

# More matches than this and replay asks before acting (unless --yes).
CONFIRM_ABOVE = 10


@click.command("replay")
@click.argument("ids", nargs=-1, type=int)
@filter_options
@click.option(
    "--force",
    is_flag=True,
    help="Also replay succeeded and superseded deliveries (their effect happened once; "
    "Spruce notes are still never posted twice).",
)
@click.option(
    "--failure-group",
    metavar="TEXT",
    help="Only the deliveries that failed with this cause, as the console's Failures page names it "
    "(DESTINATION STATUS KIND: WORDS, e.g. 'spruce 400 refused: POST /contacts -> 400: invalid email').",
)
@click.option("--dry-run", is_flag=True, help="Count what would be replayed and how long it takes; change nothing.")
@click.option("--yes", is_flag=True, help=f"Do not ask for confirmation (asked above {CONFIRM_ABOVE} events).")
@click.option("--wait", is_flag=True, help="Watch the replayed deliveries until they finish.")
@click.option(
    "--timeout",
    type=Duration(),
    default="1h",
    show_default=True,
    help="With --wait: stop watching after this long (the deliveries go on).",
)
@with_appcontext
@store_errors
def replay_command(
    filters: EventFilter,
    failure_group: str | None,
    force: bool,
    dry_run: bool,
    yes: bool,
    wait: bool,
    timeout: float,
):
    """Send events again: by IDS, or every event matching the filters (--status failed is the
    usual one). Invalid events are validated again and unhandled ones routed again. Replays
    share the vendor throttle with live traffic and take only the slots it leaves."""
    if filters.is_empty() and not failure_group:
        raise click.UsageError(
            "say which events to replay: event ids or at least one filter (--status failed is the usual one)"
        )
    if dry_run and wait:
        raise click.UsageError("--dry-run and --wait exclude each other")
    runtime = Runtime.of(current_app)
    group = _failure_group(runtime, failure_group, filters.destination)
    missing = missing_event_ids(runtime, filters.ids)
    if missing:
        raise click.BadParameter(f"no event with id {', '.join(map(str, missing))}", param_hint="IDS")
    event_ids = _chosen_event_ids(runtime, filters, group)
    if not event_ids:
        click.echo("no event matches: nothing to replay")
        return
    destination = group.destination if group else filters.destination
    details = {"failure_group": group.text} if group else None
    if dry_run:
        result = replay(
            runtime, event_ids, force=force, dry_run=True, destination=destination, actor=cli_actor(runtime)
        )
        _print_plan(result, sending_estimates(runtime, result))
        return
    if len(event_ids) > CONFIRM_ABOVE and not yes:
        click.confirm(f"Replay {len(event_ids)} events?", abort=True)

    from rich.progress import Progress

    try:
        with Progress(console=console(), transient=True) as progress:
            task = progress.add_task("replaying", total=len(event_ids))
            result = replay(
                runtime,
                event_ids,
                force=force,
                dry_run=False,
                destination=destination,
                on_batch=lambda n: progress.advance(task, n),
                actor=cli_actor(runtime),
                details=details,
            )
    except KeyboardInterrupt:
        click.echo(
            "interrupted: what was replayed stays replayed; run the same command again to "
            "continue (nothing is replayed twice)",
            err=True,
        )
        raise SystemExit(130) from None
    click.echo(f"replayed {len(result.delivery_ids)} deliveries of {result.events} events")
    _print_skipped(result.skipped)
    if wait and result.delivery_ids:
        _watch(runtime, result.delivery_ids, timeout)


def _failure_group(runtime: Runtime, text: str | None, destination: str | None) -> FailureGroup | None:
    if not text:
        return None
    try:
        group = FailureGroup.parse(text, runtime.destinations)
    except BadGroup as exc:
        raise click.BadParameter(str(exc), param_hint="--failure-group") from None
    if destination and destination != group.destination:
        raise click.UsageError(f"--destination {destination} is not the failure group's ({group.destination})")
    return group


def _chosen_event_ids(runtime: Runtime, filters: EventFilter, group: FailureGroup | None) -> list[int]:
    """The events the filters match, of those whose delivery failed with the group's cause."""
    if group is None:
        return matching_event_ids(runtime, filters)
    in_group = group_event_ids(runtime, group)
    if filters.is_empty():
        return in_group
    return sorted(set(in_group) & set(matching_event_ids(runtime, filters)))


def _print_plan(result: ReplayResult, estimates: list[SendingEstimate]) -> None:
    click.echo(f"would replay {sum(result.deliveries.values())} deliveries of {result.events} events:")
    for (event_type, destination), count in sorted(result.deliveries.items()):
        click.echo(f"  {event_type:<32} → {destination:<7} {count:>7}")
    for e in estimates:
        click.echo(
            f"  {e.destination}: up to {e.calls} calls, about {human_duration(e.took_s)} at {e.limit}/"
            f"{e.period_s:g}s, one every {e.interval_s:.3g}s as catch-up work "
            "(longer while live traffic uses the limit)"
        )
    _print_skipped(result.skipped)


def _print_skipped(skipped: Counter) -> None:
    for reason, count in sorted(skipped.items()):
        click.echo(f"  skipped {count}: {reason}")


def _watch(runtime: Runtime, delivery_ids: list[int], timeout_s: float) -> None:
    from rich.progress import Progress

    deadline = time.monotonic() + timeout_s
    with Progress(console=console(), transient=True) as progress:
        task = progress.add_task("delivering", total=len(delivery_ids))
        while True:
            statuses = delivery_statuses(runtime, delivery_ids)
            finished = sum(1 for status, _ in statuses if status in DeliveryStatus.TERMINAL)
            progress.update(task, completed=finished)
            if finished == len(delivery_ids) or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    counts = Counter(status for status, _ in statuses)
    click.echo("finished: " + ", ".join(f"{status} {n}" for status, n in sorted(counts.items())))
    errors = Counter(error for status, error in statuses if status == DeliveryStatus.FAILED)
    for error, count in errors.most_common(5):
        click.echo(f"  still failing ({count}): {error}")
    if counts[DeliveryStatus.PENDING] or counts[DeliveryStatus.IN_FLIGHT]:
        click.echo("  some are still on their way: `relay events list --status processing`")
