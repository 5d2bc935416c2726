"""Accepting a webhook: validate, de-duplicate, store the event and its planned deliveries."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from schemas.sparkloop import dedup_key, raw_dedup_key, validate_event
from web.config import Config
from web.models import Delivery, Event, EventStatus, utcnow
from workers.routing import ROUTES, planned_destinations


@dataclass(frozen=True)
class Ingested:
    event_id: int | None
    status: str
    delivery_ids: tuple[int, ...] = ()
    errors: dict | None = None
    duplicate: bool = False


def ingest(session: Session, payload: dict, raw_body: bytes, config: Config,
           source: str = "webhook") -> Ingested:
    event_type, data, errors = validate_event(payload)
    destinations: tuple[str, ...] = ()
    if errors is not None:
        status, key = EventStatus.INVALID, raw_dedup_key(raw_body)
    elif data is None or event_type not in ROUTES:
        status, key = EventStatus.UNHANDLED, raw_dedup_key(raw_body)
    else:
        key = dedup_key(event_type, data)
        destinations = planned_destinations(event_type, config)
        status = EventStatus.RECEIVED if destinations else EventStatus.DONE

    event = Event(
        type=event_type or "(missing)", status=status, dedup_key=key, payload=payload, errors=errors,
        source=source,
        # Events that did not come from a webhook (a backfill) are catch-up work: delivered
        # like replays, with the throttle slots live traffic leaves.
        deliveries=[Delivery(destination=d, replayed_at=None if source == "webhook" else utcnow())
                    for d in destinations],
    )
    session.add(event)
    try:
        session.commit()
    except IntegrityError:
        # The unique dedup key: SparkLoop retried, or two copies raced; the first one won.
        session.rollback()
        return Ingested(event_id=None, status=status, errors=errors, duplicate=True)
    return Ingested(
        event_id=event.id, status=status, errors=errors,
        delivery_ids=tuple(d.id for d in event.deliveries),
    )
