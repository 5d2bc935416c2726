"""Accepting a webhook: validate, de-duplicate, store the event and its planned deliveries."""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from relay.config import Config
from relay.models import Delivery, Event, EventStatus, EventSubject, Lane
from relay.subjects import subject_rows
from schemas.events import EVENTS, dedup_key, raw_dedup_key, validate_event


@dataclass(frozen=True)
class Ingested:
    event_id: int | None
    status: str
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
    dedup = plan.key or raw_dedup_key(raw_body)
    # Events that did not come from a webhook (a backfill) are catch-up work: delivered like
    # replays, with the throttle slots live traffic leaves.
    lane = Lane.LIVE if source == "webhook" else Lane.CATCH_UP
    event_id = _store(
        session,
        dict(type=plan.event_type or "(missing)", status=status, payload=payload, errors=errors, dedup_key=dedup,
             source=source),
        [dict(destination=d, lane=lane) for d in plan.destinations],
        # Whom it names, as digests: what lookups use instead of looking into the payload.
        subject_rows(payload, config.lookup_key),
    )
    if event_id is None:  # the unique dedup key: SparkLoop retried, or two copies raced; the first one won
        stored = session.scalar(sa.select(Event.id).where(Event.dedup_key == dedup))
        return Ingested(event_id=stored, status=status, errors=errors, duplicate=True)
    return Ingested(event_id=event_id, status=status, errors=errors)


def _store(session: Session, event: dict, deliveries: list[dict], subjects: list[dict]) -> int | None:
    """The event, its deliveries and its subjects in one transaction, in three statements
    (Core, not the unit of work: a third of the time); None when its dedup key is taken."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    event_id = session.scalar(insert(Event).values(**event).on_conflict_do_nothing(index_elements=["dedup_key"])
                              .returning(Event.id))
    if event_id is None:
        session.rollback()
        return None
    for model, rows in ((Delivery, deliveries), (EventSubject, subjects)):
        if rows:
            session.execute(sa.insert(model), [{"event_id": event_id, **row} for row in rows])
    session.commit()
    return event_id
