"""Replay: send events again through the same engine, with the same ids.

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

Every delivery one replay sends again gets the same `replayed_at`, the replay's start, which its
audit entry records (`details["replayed_at"]`): that is how `replay_progress` finds a replay's
deliveries, however many (the entry lists only the first audit.MAX_IDS ids), from an index.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from operations import audit
from operations.audit import Actor
from operations.filters import EventFilter
from relay.config import Config
from relay.destinations import Destination, Registry
from relay.models import AuditEntry, Delivery, DeliveryStatus, Event, EventStatus, Lane, utcnow
from relay.planning import Plan, plan_event
from relay.runtime import Runtime
from schemas.events import EVENTS, validate_event

BATCH = 200
REPLAY_ACTION = "events.replay"
FORCEABLE = (DeliveryStatus.SUCCEEDED, DeliveryStatus.SUPERSEDED)


@dataclass
class ReplayResult:
    deliveries: Counter = field(default_factory=Counter)  # (event type, destination) -> count
    vendor_calls: Counter = field(default_factory=Counter)  # destination -> upper bound
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    delivery_ids: list[int] = field(default_factory=list)
    events: int = 0
    # A replay that ran (not dry): the `replayed_at` its deliveries got, and its audit entry.
    replayed_at: datetime | None = None
    audit_entry_id: int | None = None


def matching_event_ids(runtime: Runtime, filters: EventFilter) -> list[int]:
    with runtime.session() as session:
        return list(session.scalars(matching_query(filters)))


def missing_event_ids(runtime: Runtime, ids: tuple[int, ...]) -> list[int]:
    """Those of `ids` no event has."""
    if not ids:
        return []
    return sorted(set(ids) - set(matching_event_ids(runtime, EventFilter(ids=ids))))


def matching_query(filters: EventFilter) -> sa.Select:
    """The ids of the events a replay with these filters acts on, oldest first."""
    return filters.apply(sa.select(Event.id)).order_by(Event.id)


def replay(
    runtime: Runtime,
    event_ids: list[int],
    *,
    force: bool,
    dry_run: bool,
    destination: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    actor: Actor,
    details: dict | None = None,
) -> ReplayResult:
    """Replay the events (or, dry, count what a replay would do: no row lock, no write).
    `on_batch` hears how many events each committed batch held. A replay is audited as `actor`'s,
    with the deliveries it sent again (interrupted: those replayed so far) and `details` (what
    chose the events: counts, flags, a failure group; never a payload value)."""
    result = ReplayResult()
    if dry_run:
        return _replay(runtime, event_ids, result, force, True, destination, on_batch)
    result.replayed_at = utcnow()
    with audit.audited(runtime, actor, REPLAY_ACTION) as entry:
        entry.details |= {
            **(details or {}),
            "force": force,
            "destination": destination,
            "replayed_at": result.replayed_at.isoformat(),
        }
        try:
            _replay(runtime, event_ids, result, force, False, destination, on_batch)
        finally:
            entry.ids("events", event_ids)
            entry.ids("deliveries", result.delivery_ids)
            entry.details["skipped"] = sum(result.skipped.values())
    result.audit_entry_id = entry.entry_id
    return result


def _replay(
    runtime: Runtime,
    event_ids: list[int],
    result: ReplayResult,
    force: bool,
    dry_run: bool,
    destination: str | None,
    on_batch: Callable[[int], None] | None,
) -> ReplayResult:
    config = runtime.config
    for batch in _batches(event_ids):
        with runtime.session() as session:
            query = (
                sa.select(Event).where(Event.id.in_(batch)).options(selectinload(Event.deliveries)).order_by(Event.id)
            )
            batch_ids = []
            for event in session.scalars(query if dry_run else query.with_for_update()).all():
                decision = _decide(session, event, config, force, destination)
                _count(event, decision, result, config.destinations)
                if not dry_run:
                    assert result.replayed_at is not None  # replay() sets it before a replay that writes
                    batch_ids += _apply(session, event, decision, config.destinations, result.replayed_at)
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
        return None if force else f"{delivery.status} (a forced replay sends it again)"
    return None if delivery.status == DeliveryStatus.FAILED else f"already {delivery.status}"


def _count(event: Event, decision: Decision, result: ReplayResult, destinations: Registry) -> None:
    for reason in decision.skipped:
        result.skipped[reason] += 1
    event_type = decision.plan.event_type if decision.plan else event.type
    for destination in decision.destinations():
        result.deliveries[(event_type, destination)] += 1
        result.vendor_calls[destination] += _calls_at_most(event_type, event.payload, destinations[destination])
    if decision.destinations():
        result.events += 1


def _apply(
    session: Session, event: Event, decision: Decision, destinations: Registry, replayed_at: datetime
) -> list[int]:
    if decision.plan:
        assert decision.plan.key is not None  # _not_yet passes only valid, handled plans: they have a key
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
            kept = destinations[delivery.destination].kept_on_force
            delivery.progress = {}
            delivery.step_times = {k: v for k, v in (delivery.step_times or {}).items() if k in kept}
        delivery.status, delivery.attempts, delivery.deferrals = DeliveryStatus.PENDING, 0, 0
        delivery.next_attempt_at, delivery.replayed_at, delivery.lane = now, replayed_at, Lane.CATCH_UP
        delivery.enqueued_at = delivery.finished_at = delivery.lease_expires_at = None
        delivery.throttle_slot = None
    if again:
        event.status = EventStatus.PROCESSING
    session.flush()
    return [d.id for d in again]


def _calls_at_most(event_type: str, payload: dict, destination: Destination) -> int:
    _, data, _ = validate_event(payload)
    subscribers = len(EVENTS[event_type].subscribers(data)) if data is not None else 0
    return destination.most_calls(destination.sends(event_type), subscribers)


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]


@dataclass(frozen=True)
class SendingEstimate:
    """How long a replay's calls to one destination take at most, as catch-up work."""

    destination: str
    calls: int
    took_s: float
    limit: int
    period_s: float
    interval_s: float


def sending_estimates(runtime: Runtime, result: ReplayResult) -> list[SendingEstimate]:
    """Per destination of a (dry) replay's result: its calls at most, and how long they take."""
    estimates = []
    for destination, calls in sorted(result.vendor_calls.items()):
        throttle = runtime.destinations[destination].client(runtime).guard.throttle
        rate = throttle.rate
        # Replays are catch-up work: the throttle paces them one interval apart (workers.throttle).
        estimates.append(
            SendingEstimate(
                destination,
                calls,
                throttle.sending_time_s(calls, Lane.CATCH_UP),
                rate.limit,
                rate.period_s,
                rate.interval_s,
            )
        )
    return estimates


def delivery_statuses(runtime: Runtime, delivery_ids: list[int]) -> list[tuple[str, str | None]]:
    """(status, last error) of each of these deliveries."""
    with runtime.session() as session:
        return [
            (status, error)
            for status, error in session.execute(
                sa.select(Delivery.status, Delivery.last_error).where(Delivery.id.in_(delivery_ids))
            )
        ]


@dataclass(frozen=True)
class ReplayProgress:
    """Where the deliveries one replay sent again are now, by status."""

    audit_entry_id: int
    replayed_at: datetime
    actor: str
    outcome: str
    details: dict
    by_status: dict[str, int]

    def count(self, *statuses: str) -> int:
        return sum(self.by_status.get(status, 0) for status in statuses)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def done(self) -> bool:
        """Nothing of it pending or in flight: each delivery succeeded, or failed again."""
        return not self.count(DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)


def replay_progress(runtime: Runtime, audit_entry_id: int) -> ReplayProgress | None:
    """The progress of the replay that audit entry recorded; None if it recorded no replay that
    wrote (a dry run records none; a replay from before replays stamped `replayed_at` has none).
    A delivery replayed again since belongs to the later replay, whose time it carries now."""
    with runtime.session() as session:
        entry = session.get(AuditEntry, audit_entry_id)
        if entry is None or entry.action != REPLAY_ACTION or not isinstance(entry.details.get("replayed_at"), str):
            return None
        replayed_at = datetime.fromisoformat(entry.details["replayed_at"])
        by_status: dict[str, int] = {
            status: count
            for status, count in session.execute(
                sa.select(Delivery.status, sa.func.count())
                .where(Delivery.replayed_at == replayed_at)
                .group_by(Delivery.status)
            )
        }
        return ReplayProgress(entry.id, replayed_at, entry.actor, entry.outcome, dict(entry.details), by_status)
