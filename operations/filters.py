"""Which events an operator means: the filters every events operation shares."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from relay.models import Delivery, Event, EventStatus, EventSubject
from relay.subjects import EMAIL
from schemas.events import EVENTS

EVENT_STATUSES = (
    EventStatus.RECEIVED,
    EventStatus.PROCESSING,
    EventStatus.DONE,
    EventStatus.FAILED,
    EventStatus.INVALID,
    EventStatus.UNHANDLED,
)


def event_types() -> list[str]:
    """The event types Relay knows (read on each call: a type registered later is one)."""
    return sorted(EVENTS)


@dataclass(frozen=True)
class EventFilter:
    ids: tuple[int, ...] = ()
    statuses: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    destination: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    error: str | None = None
    # An email's digest (relay.subjects.email_digest): only the events that name this person by
    # email (event_subjects, so the email itself is never asked for nor kept).
    person: str | None = None
    # Keyset paging: only events with an id below `older_than`, above `newer_than`. The deliveries
    # and subjects looked at are bounded alike: a merge join with the deliveries then starts at
    # the bound instead of reading every delivery of the newer (older) events first.
    older_than: int | None = None
    newer_than: int | None = None

    def is_empty(self) -> bool:
        return not (
            self.ids
            or self.statuses
            or self.types
            or self.destination
            or self.since
            or self.until
            or self.error
            or self.person
            or self.older_than is not None
            or self.newer_than is not None
        )

    def apply(self, query: sa.Select) -> sa.Select:
        query = self._bounded(query, Event.id)
        if self.ids:
            query = query.where(Event.id.in_(self.ids))
        if self.statuses:
            query = query.where(Event.status.in_(self.statuses))
        if self.types:
            query = query.where(Event.type.in_(self.types))
        if self.since:
            query = query.where(Event.received_at >= self.since)
        if self.until:
            query = query.where(Event.received_at < self.until)
        if self.destination or self.error:
            # The same delivery must match both: "failed at spruce with a 400".
            matching = self._bounded(sa.select(Delivery.event_id), Delivery.event_id)
            if self.destination:
                matching = matching.where(Delivery.destination == self.destination)
            if self.error:
                matching = matching.where(Delivery.last_error.ilike(f"%{_escape_like(self.error)}%", escape="\\"))
            query = query.where(Event.id.in_(matching))
        if self.person:
            named = self._bounded(sa.select(EventSubject.event_id), EventSubject.event_id)
            query = query.where(
                Event.id.in_(named.where(EventSubject.kind == EMAIL, EventSubject.digest == self.person))
            )
        return query

    def _bounded(self, query: sa.Select, event_id: sa.orm.InstrumentedAttribute[int]) -> sa.Select:
        if self.older_than is not None:
            query = query.where(event_id < self.older_than)
        if self.newer_than is not None:
            query = query.where(event_id > self.newer_than)
        return query


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
