"""`relay events replay`: send events again through the same engine, with the same ids.

What a replay does per event:
- `invalid`: validated again (after a schema fix); if it passes now, its deliveries are planned.
- `unhandled`: planned if a spec for its type exists now.
- otherwise: its `failed` deliveries go back to `pending` with a fresh retry budget, keeping
  their progress, so they resume where they stopped. Succeeded and superseded deliveries are
  skipped (their effect happened) unless forced; a forced one forgets its progress but keeps
  its idempotency keys and what its destination says a forced replay keeps (Spruce: the time
  of the first note attempt, so Spruce never gets a second note). Pending and in-flight
  deliveries are on their way already and left alone.

Each batch is committed, and the workers' dispatcher publishes its deliveries on the catch-up
queue as the vendors' limits let them through (workers.dispatch); an interruption leaves every
delivery either untouched or pending, and the same command run again continues without
repeating what was replayed.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.orm import Session, selectinload

from relay.config import Config
from relay.db import session_scope
from relay.models import Delivery, DeliveryStatus, Event, EventStatus, Lane, utcnow
from schemas.events import EVENTS, sends, validate_event
from web.cli.filters import EventFilter, filter_options
from web.cli.support import Duration, console, human_duration, store_errors
from web.ingest import Plan, plan_event
from workers.destinations import DESTINATIONS

BATCH = 200
# More matches than this and replay asks before acting (unless --yes).
CONFIRM_ABOVE = 10
FORCEABLE = (DeliveryStatus.SUCCEEDED, DeliveryStatus.SUPERSEDED)


@dataclass
class ReplayResult:
    deliveries: Counter = field(default_factory=Counter)   # (event type, destination) -> count
    vendor_calls: Counter = field(default_factory=Counter)  # destination -> upper bound
    skipped: Counter = field(default_factory=Counter)       # reason -> count
    delivery_ids: list[int] = field(default_factory=list)
    events: int = 0


def matching_event_ids(filters: EventFilter) -> list[int]:
    with session_scope() as session:
        return list(session.scalars(matching_query(filters)))


def matching_query(filters: EventFilter) -> sa.Select:
    """The ids of the events a replay with these filters acts on, oldest first."""
    return filters.apply(sa.select(Event.id)).order_by(Event.id)


def replay(event_ids: list[int], *, force: bool, dry_run: bool, destination: str | None = None,
           on_batch: Callable[[int], None] | None = None) -> ReplayResult:
    """Replay the events (or, dry, count what a replay would do: no row lock, no write)."""
    config: Config = current_app.config["RELAY"]
    result = ReplayResult()
    for batch in _batches(event_ids):
        with session_scope() as session:
            query = (sa.select(Event).where(Event.id.in_(batch)).options(selectinload(Event.deliveries))
                     .order_by(Event.id))
            batch_ids = []
            for event in session.scalars(query if dry_run else query.with_for_update()).all():
                decision = _decide(session, event, config, force, destination)
                _count(event, decision, result)
                if not dry_run:
                    batch_ids += _apply(session, event, decision)
            if not dry_run:
                session.commit()
        result.delivery_ids += batch_ids
        if on_batch:
            on_batch(len(batch))
    return result


@dataclass
class Decision:
    """What replaying one event means: the deliveries sent again, or, for an invalid or
    unhandled event that passes now, its new plan; and why the rest is skipped."""
    again: list[Delivery] = field(default_factory=list)
    plan: Plan | None = None
    skipped: list[str] = field(default_factory=list)

    def destinations(self) -> list[str]:
        return list(self.plan.destinations) if self.plan else [d.destination for d in self.again]


def _decide(session: Session, event: Event, config: Config, force: bool, destination: str | None) -> Decision:
    """Reads only."""
    if event.status in (EventStatus.INVALID, EventStatus.UNHANDLED):
        # Planned anew, to every destination: the event was never delivered.
        plan = plan_event(event.payload, config)
        reason = _not_yet(session, event, plan)
        if reason:
            return Decision(skipped=[reason])
        return Decision(plan=plan, skipped=[] if plan.destinations else ["no configured destination"])
    decision = Decision()
    for delivery in event.deliveries:
        if destination and delivery.destination != destination:
            continue
        reason = _skip_reason(delivery, force)
        if reason:
            decision.skipped.append(reason)
        else:
            decision.again.append(delivery)
    return decision


def _not_yet(session: Session, event: Event, plan: Plan) -> str | None:
    """Why an invalid or unhandled event still cannot be delivered, or None."""
    if plan.status == EventStatus.INVALID:
        return "still invalid"
    if plan.status == EventStatus.UNHANDLED:
        return "still no handler for its type"
    if session.scalar(sa.select(Event.id).where(Event.dedup_key == plan.key, Event.id != event.id)):
        return "already received as another event"
    return None


def _skip_reason(delivery: Delivery, force: bool) -> str | None:
    if delivery.status in FORCEABLE:
        return None if force else f"{delivery.status} (use --force)"
    return None if delivery.status == DeliveryStatus.FAILED else f"already {delivery.status}"


def _count(event: Event, decision: Decision, result: ReplayResult) -> None:
    for reason in decision.skipped:
        result.skipped[reason] += 1
    event_type = decision.plan.event_type if decision.plan else event.type
    for destination in decision.destinations():
        result.deliveries[(event_type, destination)] += 1
        result.vendor_calls[destination] += _calls_at_most(event_type, event.payload, destination)
    if decision.destinations():
        result.events += 1


def _apply(session: Session, event: Event, decision: Decision) -> list[int]:
    if decision.plan:
        event.type, event.errors, event.dedup_key = decision.plan.event_type, None, decision.plan.key
        event.deliveries = [Delivery(destination=d) for d in decision.plan.destinations]
        if not event.deliveries:  # valid now, but nowhere to go: finished
            event.status = EventStatus.DONE
            return []
        again = event.deliveries
    else:
        again = decision.again
    now = utcnow()
    for delivery in again:
        if delivery.status in FORCEABLE:
            kept = DESTINATIONS[delivery.destination].kept_on_force
            delivery.progress = {}
            delivery.step_times = {k: v for k, v in (delivery.step_times or {}).items() if k in kept}
        delivery.status, delivery.attempts, delivery.deferrals = DeliveryStatus.PENDING, 0, 0
        delivery.next_attempt_at, delivery.replayed_at, delivery.lane = now, now, Lane.CATCH_UP
        delivery.enqueued_at = delivery.finished_at = delivery.lease_expires_at = None
        delivery.throttle_slot = None
    if again:
        event.status = EventStatus.PROCESSING
    session.flush()
    return [d.id for d in again]


def _calls_at_most(event_type: str, payload: dict, destination: str) -> int:
    _, data, _ = validate_event(payload)
    subscribers = len(EVENTS[event_type].subscribers(data)) if data is not None else 0
    return DESTINATIONS[destination].most_calls(sends(event_type, destination), subscribers)


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start:start + BATCH]


# --- the command --------------------------------------------------------------------------


@click.command("replay")
@click.argument("ids", nargs=-1, type=int)
@filter_options
@click.option("--force", is_flag=True,
              help="Also replay succeeded and superseded deliveries (their effect happened once; "
                   "Spruce notes are still never posted twice).")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed and how long it takes; change nothing.")
@click.option("--yes", is_flag=True, help=f"Do not ask for confirmation (asked above {CONFIRM_ABOVE} events).")
@click.option("--wait", is_flag=True, help="Watch the replayed deliveries until they finish.")
@click.option("--timeout", type=Duration(), default="1h", show_default=True,
              help="With --wait: stop watching after this long (the deliveries go on).")
@with_appcontext
@store_errors
def replay_command(filters: EventFilter, force: bool, dry_run: bool, yes: bool, wait: bool, timeout: float):
    """Send events again: by IDS, or every event matching the filters (--status failed is the
    usual one). Invalid events are validated again and unhandled ones routed again. Replays
    share the vendor throttle with live traffic and take only the slots it leaves."""
    if filters.is_empty():
        raise click.UsageError("say which events to replay: event ids or at least one filter "
                               "(--status failed is the usual one)")
    if dry_run and wait:
        raise click.UsageError("--dry-run and --wait exclude each other")
    missing = sorted(set(filters.ids) - set(matching_event_ids(EventFilter(ids=filters.ids))))
    if missing:
        raise click.BadParameter(f"no event with id {', '.join(map(str, missing))}", param_hint="IDS")
    event_ids = matching_event_ids(filters)
    if not event_ids:
        click.echo("no event matches: nothing to replay")
        return
    if dry_run:
        _print_plan(replay(event_ids, force=force, dry_run=True, destination=filters.destination))
        return
    if len(event_ids) > CONFIRM_ABOVE and not yes:
        click.confirm(f"Replay {len(event_ids)} events?", abort=True)

    from rich.progress import Progress

    try:
        with Progress(console=console(), transient=True) as progress:
            task = progress.add_task("replaying", total=len(event_ids))
            result = replay(event_ids, force=force, dry_run=False, destination=filters.destination,
                            on_batch=lambda n: progress.advance(task, n))
    except KeyboardInterrupt:
        click.echo("interrupted: what was replayed stays replayed; run the same command again to "
                   "continue (nothing is replayed twice)", err=True)
        raise SystemExit(130) from None
    click.echo(f"replayed {len(result.delivery_ids)} deliveries of {result.events} events")
    _print_skipped(result.skipped)
    if wait and result.delivery_ids:
        _watch(result.delivery_ids, timeout)


def _print_plan(result: ReplayResult) -> None:
    config = current_app.config["RELAY"]
    click.echo(f"would replay {sum(result.deliveries.values())} deliveries of {result.events} events:")
    for (event_type, destination), count in sorted(result.deliveries.items()):
        click.echo(f"  {event_type:<32} → {destination:<7} {count:>7}")
    for destination, calls in sorted(result.vendor_calls.items()):
        throttle = DESTINATIONS[destination].client(config).guard.throttle
        rate = throttle.rate
        # Replays are catch-up work: the throttle paces them one interval apart (workers.throttle).
        took = throttle.sending_time_s(calls, Lane.CATCH_UP)
        click.echo(f"  {destination}: up to {calls} calls, about {human_duration(took)} at {rate.limit}/"
                   f"{rate.period_s:g}s, one every {rate.interval_s:.3g}s as catch-up work "
                   "(longer while live traffic uses the limit)")
    _print_skipped(result.skipped)


def _print_skipped(skipped: Counter) -> None:
    for reason, count in sorted(skipped.items()):
        click.echo(f"  skipped {count}: {reason}")


def _watch(delivery_ids: list[int], timeout_s: float) -> None:
    from rich.progress import Progress

    deadline = time.monotonic() + timeout_s
    with Progress(console=console(), transient=True) as progress:
        task = progress.add_task("delivering", total=len(delivery_ids))
        while True:
            statuses = _statuses(delivery_ids)
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


def _statuses(delivery_ids: list[int]) -> list[tuple[str, str | None]]:
    with session_scope() as session:
        return [tuple(row) for row in session.execute(
            sa.select(Delivery.status, Delivery.last_error).where(Delivery.id.in_(delivery_ids)))]
