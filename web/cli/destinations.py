"""`relay destinations …`: each destination's state, and holding one while its vendor is
repaired (what a hold does: operations.destinations). A bad name or reason is one line and exit
code 2; `resume` asks first (`--yes` does not), and refuses to guess without a terminal."""

from __future__ import annotations

import functools
import json
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from operations import destinations
from operations.destinations import BadDestination, BadReason, DestinationStatus, Estimate, Hold
from operations.reserves import DailyReading
from relay.durations import human_duration
from relay.runtime import Runtime
from web.cli.audit import cli_actor
from web.cli.support import counted, store_errors

LANE_WORDS = {"live": "live", "catch_up": "catch-up", "retry": "retry"}


@click.group("destinations")
def destinations_group():
    """Each destination's state; hold one's deliveries while its vendor is repaired, then resume."""


def _bad_input(command):
    """A name no destination has, or a reason that cannot be kept: exit code 2, naming it."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BadDestination as exc:
            raise click.BadParameter(str(exc), param_hint="NAME") from None
        except BadReason as exc:
            raise click.BadParameter(str(exc), param_hint="--reason") from None

    return wrapper


@destinations_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@with_appcontext
@store_errors
def destinations_status(as_json: bool):
    """Each destination: delivering, held (why, by whom, since when) or its breaker open; what a
    reserve parked (by lane, and why); its rate window, the vendor's daily remaining, its backlog
    and how long that takes at the current limits."""
    found = destinations.status(Runtime.of(current_app))
    if as_json:
        click.echo(json.dumps([d.to_json() for d in found], indent=2))
        return
    if not found:
        click.echo("no destination is configured: set a vendor's credentials (see `relay doctor`)")
    for d in found:
        _print_status(d)


def _print_status(d: DestinationStatus) -> None:
    health = d.health
    calls = health.state.name + (f": {health.state.detail}" if health.state.detail else "")
    click.echo(f"{d.name}: {_held(d.hold) if d.hold else calls}")
    if d.hold and health.state.name != "delivering":
        click.echo(f"  calls: {calls}")
    for parked in d.parked:
        why = parked.reason.removeprefix("parked: ")
        click.echo(f"  parked: {parked.count} {LANE_WORDS.get(parked.lane, parked.lane)}, no attempt spent: {why}")
    throttle = health.state.throttle
    if throttle is not None:
        window = f"{throttle.calls_in_window} calls in the current window (limit {throttle.limit})"
        if throttle.vendor_remaining is not None:
            window += f"; the vendor said {throttle.vendor_remaining} remain"
        click.echo(f"  window: {window}")
    if d.daily is not None:
        remaining, limit = d.daily
        of = "" if limit is None else f" of {limit}"
        click.echo(f"  today: {remaining}{of} calls remain, as the vendor last said{_turnover(d.day)}")
    backlog = health.backlog
    if not backlog.total:
        click.echo("  backlog: none waiting")
    else:
        oldest = f", the oldest for {human_duration(backlog.oldest_waiting_s or 0)}"
        click.echo(
            f"  backlog: {backlog.total} waiting ({backlog.pending} pending{_by_lane(d.pending_by_lane)}, "
            f"{backlog.in_flight} in flight){oldest}"
        )
    if d.estimate is not None:
        click.echo(f"  estimate: {_estimate(d.name, d.estimate)}")


def _turnover(day: DailyReading | None) -> str:
    """When the vendor's day turns over, as the reserves learned it (Spruce documents none)."""
    if day is None or day.next_turn is None:
        return ""
    return f"; its day turns over about {day.next_turn:%Y-%m-%d %H:%M} UTC (learned)"


def _held(hold: Hold) -> str:
    since = f"held since {hold.held_at:%Y-%m-%d %H:%M:%S} UTC by {hold.held_by}"
    return since + (f": {hold.reason}" if hold.reason else "")


def _by_lane(pending_by_lane: dict[str, int]) -> str:
    lanes = [f"{LANE_WORDS.get(lane, lane)} {count}" for lane, count in sorted(pending_by_lane.items()) if count]
    return f": {', '.join(lanes)}" if lanes else ""


def _estimate(name: str, estimate: Estimate) -> str:
    text = (
        f"up to {counted(estimate.calls, 'vendor call')}, about {human_duration(estimate.took_s)} at "
        f"{estimate.limit}/{estimate.period_s:g}s with no other traffic"
    )
    if estimate.beyond_today:
        text += (
            f"; {name} said {estimate.daily_remaining} calls remain today: what they do not cover waits for its "
            "daily window to turn"
        )
    return text


@destinations_group.command("hold")
@click.argument("name")
@click.option(
    "--reason",
    metavar="TEXT",
    help=f"Why, in a few words (at most {destinations.MAX_REASON} characters, no email address): "
    "every console user sees it, and the audit log keeps it.",
)
@with_appcontext
@store_errors
@_bad_input
def destinations_hold(name: str, reason: str | None):
    """Hold NAME's deliveries: webhooks are still taken and stored, and NAME's deliveries wait,
    pending (no attempt, no retry spent) until `relay destinations resume NAME`; the other
    destinations go on. A delivery already under way finishes."""
    runtime = Runtime.of(current_app)
    held = destinations.hold(runtime, name, reason=reason, actor=cli_actor(runtime))
    if not held.changed:
        click.echo(f"{name} is already {_held(held.hold) if held.hold else 'held'} (unchanged)")
        return
    click.echo(
        f"held {name}: its deliveries wait ({held.pending} pending now); "
        f"`relay destinations resume {name}` lets them go"
    )


@destinations_group.command("resume")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
@store_errors
@_bad_input
def destinations_resume(name: str, yes: bool):
    """Let NAME's held deliveries go: first says what is held and how long it takes, asks, then
    resumes. They go oldest first, live before catch-up work, within NAME's limits."""
    runtime = Runtime.of(current_app)
    found = destinations.destination_status(runtime, name)
    if found is not None and found.hold is None:
        click.echo(f"{name} is not held: nothing to resume")
        return
    if found is None:  # held, and its credentials gone since
        click.echo(f"{name} is held but no longer configured: resuming ends the hold, and nothing of it is delivered")
    else:
        assert found.hold is not None
        click.echo(f"{name} is {_held(found.hold)}")
        click.echo(f"held: {_deliveries(found.pending)}{_by_lane(found.pending_by_lane)}")
        if found.estimate is not None:
            click.echo(f"estimate: {_estimate(name, found.estimate)}")
    if not yes:
        if not _interactive():
            raise click.UsageError("resume asks first, and there is no terminal to ask: add --yes")
        click.confirm(f"Resume {name}?", abort=True)
    resumed = destinations.resume(runtime, name, actor=cli_actor(runtime))
    if not resumed.changed:
        click.echo(f"{name} is not held (resumed meanwhile): nothing to resume")
        return
    click.echo(f"resumed {name}: {_deliveries(resumed.pending)} go, live before catch-up, within its limits")


def _deliveries(count: int) -> str:
    return f"{count} deliver{'y' if count == 1 else 'ies'}"


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()
