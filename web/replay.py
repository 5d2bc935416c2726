"""`relay events replay`: send events again through the same engine, with the same ids.

What a replay does per event:
- `invalid`: validated again (after a schema fix); if it passes now, its deliveries are planned.
- `unhandled`: planned if a handler exists now.
- otherwise: its `failed` deliveries go back to `pending` with a fresh retry budget, keeping
  their finished steps, so they resume where they stopped. Succeeded and superseded
  deliveries are skipped (their effect happened) unless forced; a forced one forgets its steps
  but keeps its idempotency keys and the time of its first note attempt, so Spruce never gets
  a second note. Pending and in-flight deliveries are on their way already and left alone.

Each batch is committed and then enqueued on the replay queue; an interruption leaves every
delivery either untouched or pending (the sweep enqueues what the broker missed), and the same
command run again continues without repeating what was replayed.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session, selectinload

from schemas.sparkloop import affected_subscribers, validate_event
from web.config import Config
from web.db import session_scope
from web.event_filters import EventFilter
from web.ingest import plan_event
from web.models import Delivery, DeliveryStatus, Event, EventStatus, utcnow
from workers.queue import REPLAY_QUEUE, enqueue_deliveries
from workers import spruce_delivery
from workers.routing import handler_for

BATCH = 200
REPLAYABLE = (DeliveryStatus.FAILED,)
FORCEABLE = (DeliveryStatus.SUCCEEDED, DeliveryStatus.SUPERSEDED)
# Steps a forced replay keeps: without it, a note older than Spruce's key window is posted
# again instead of being looked for first.
KEPT_ON_FORCE = ("spruce.note.first_attempt_ms",)
# Upper bounds of Spruce calls per delivery, for the dry run's time estimate: search and
# create the contact; then list and create the note conversation, and post the note.
SPRUCE_CALLS = {spruce_delivery.ensure_contact: 2, spruce_delivery.post_reward_note: 5}


@dataclass
class ReplayResult:
    deliveries: Counter = field(default_factory=Counter)   # (event type, destination) -> count
    vendor_calls: Counter = field(default_factory=Counter)  # destination -> upper bound
    skipped: Counter = field(default_factory=Counter)       # reason -> count
    delivery_ids: list[int] = field(default_factory=list)
    events: int = 0


def matching_event_ids(filters: EventFilter) -> list[int]:
    with session_scope() as session:
        return list(session.scalars(filters.apply(sa.select(Event.id)).order_by(Event.id)))


def replay(event_ids: list[int], *, force: bool, dry_run: bool, destination: str | None = None,
           on_batch: Callable[[int], None] | None = None) -> ReplayResult:
    config: Config = current_app.config["RELAY"]
    result = ReplayResult()
    for batch in _batches(event_ids):
        with session_scope() as session:
            events = session.scalars(sa.select(Event).where(Event.id.in_(batch))
                                     .options(selectinload(Event.deliveries))
                                     .order_by(Event.id).with_for_update()).all()
            batch_ids = []
            for event in events:
                batch_ids += _replay_event(session, event, config, force, destination, result)
            if dry_run:
                session.rollback()
            else:
                session.commit()
        if not dry_run and batch_ids:
            enqueue_deliveries(batch_ids, queue=REPLAY_QUEUE)
            result.delivery_ids += batch_ids
        if on_batch:
            on_batch(len(batch))
    return result


def _replay_event(session: Session, event: Event, config: Config, force: bool,
                  destination: str | None, result: ReplayResult) -> list[int]:
    if event.status in (EventStatus.INVALID, EventStatus.UNHANDLED):
        reason = _plan_again(session, event, config)
        if reason:
            result.skipped[reason] += 1
            return []
    now = utcnow()
    replayed = []
    for delivery in event.deliveries:
        if destination and delivery.destination != destination:
            continue
        if delivery.status in FORCEABLE and not force:
            result.skipped[f"{delivery.status} (use --force)"] += 1
            continue
        if delivery.status not in (*REPLAYABLE, *FORCEABLE):
            result.skipped[f"already {delivery.status}"] += 1
            continue
        if delivery.status in FORCEABLE:
            delivery.steps = {k: v for k, v in (delivery.steps or {}).items() if k in KEPT_ON_FORCE}
        delivery.status, delivery.attempts, delivery.next_attempt_at = DeliveryStatus.PENDING, 0, now
        delivery.replayed_at, delivery.enqueued_at, delivery.finished_at = now, None, None
        delivery.lease_expires_at = None
        replayed.append(delivery)
        result.deliveries[(event.type, delivery.destination)] += 1
        result.vendor_calls[delivery.destination] += _calls_at_most(event, delivery.destination)
    if replayed:
        event.status = EventStatus.PROCESSING
        result.events += 1
    session.flush()
    return [d.id for d in replayed]


def _plan_again(session: Session, event: Event, config: Config) -> str | None:
    """Validate an invalid or unhandled event again and plan its deliveries; the reason it
    cannot be replayed yet, or None."""
    plan = plan_event(event.payload, config)
    if plan.status == EventStatus.INVALID:
        return "still invalid"
    if plan.status == EventStatus.UNHANDLED:
        return "still no handler for its type"
    other = session.scalar(sa.select(Event.id).where(Event.dedup_key == plan.key, Event.id != event.id))
    if other is not None:
        return "already received as another event"
    event.type, event.errors, event.dedup_key = plan.event_type, None, plan.key
    event.deliveries = [Delivery(destination=d) for d in plan.destinations]
    if not event.deliveries:
        event.status = EventStatus.DONE
        return "no configured destination"
    for delivery in event.deliveries:
        delivery.status = DeliveryStatus.FAILED  # about to be replayed like any failed one
    return None


def _calls_at_most(event: Event, destination: str) -> int:
    if destination == "sprig":
        _, data, _ = validate_event(event.payload)
        return max(len(affected_subscribers(event.type, data)), 1) if data else 1
    return SPRUCE_CALLS.get(handler_for(event.type, destination), 2)


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start:start + BATCH]
