"""Accepting a webhook: validate, de-duplicate, store the event and its planned deliveries."""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from relay.config import Config
from relay.models import Delivery, Event, EventStatus, EventSubject, Lane
from relay.subjects import subject_rows
from schemas.events import EVENTS, dedup_key, raw_dedup_key, validate_event


@dataclass(frozen=True)
class Ingested:
    event_id: int | None
    status: str
    delivery_ids: tuple[int, ...] = ()
    errors: dict | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class Plan:
    """What a payload is: its type, status, field errors, natural de-duplication key (None when
    invalid or unhandled) and the destinations it goes to."""
    event_type: str
    status: str
    errors: dict | None = None
    key: str | None = None
    destinations: tuple[str, ...] = ()


def planned_destinations(event_type: str, config: Config) -> tuple[str, ...]:
    """The event's destinations (RELAY_ROUTES overrides its spec) that have credentials."""
    wanted = config.routes_override.get(event_type, EVENTS[event_type].destinations)
    return tuple(d for d in wanted if d in config.configured_destinations)


def plan_event(payload: dict, config: Config) -> Plan:
    """Validate and route a payload: used on receipt and again when an event is replayed."""
    event_type, data, errors = validate_event(payload)
    if errors is not None:
        return Plan(event_type, EventStatus.INVALID, errors=errors)
    if data is None:
        return Plan(event_type, EventStatus.UNHANDLED)
    destinations = planned_destinations(event_type, config)
    return Plan(event_type, EventStatus.RECEIVED if destinations else EventStatus.DONE,
                key=dedup_key(event_type, data), destinations=destinations)


def ingest(session: Session, payload: dict, raw_body: bytes, config: Config,
           source: str = "webhook") -> Ingested:
    plan = plan_event(payload, config)
    status, errors = plan.status, plan.errors
    # Events that did not come from a webhook (a backfill) are catch-up work: delivered like
    # replays, with the throttle slots live traffic leaves.
    lane = Lane.LIVE if source == "webhook" else Lane.CATCH_UP
    event = Event(
        type=plan.event_type or "(missing)", status=status, payload=payload, errors=errors,
        dedup_key=plan.key or raw_dedup_key(raw_body), source=source,
        deliveries=[Delivery(destination=d, lane=lane) for d in plan.destinations],
        # Whom it names, as digests: what lookups use instead of looking into the payload.
        subjects=[EventSubject(**row) for row in subject_rows(payload, config.lookup_key)],
    )
    session.add(event)
    try:
        session.commit()
    except IntegrityError:
        # The unique dedup key: SparkLoop retried, or two copies raced; the first one won.
        session.rollback()
        stored = session.scalar(sa.select(Event.id).where(Event.dedup_key == event.dedup_key))
        return Ingested(event_id=stored, status=status, errors=errors, duplicate=True)
    return Ingested(
        event_id=event.id, status=status, errors=errors,
        delivery_ids=tuple(d.id for d in event.deliveries),
    )
