"""Which events an operator means: the filters every events operation shares."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from relay.models import Delivery, Event, EventStatus

EVENT_STATUSES = (
    EventStatus.RECEIVED,
    EventStatus.PROCESSING,
    EventStatus.DONE,
    EventStatus.FAILED,
    EventStatus.INVALID,
    EventStatus.UNHANDLED,
)


@dataclass(frozen=True)
class EventFilter:
    ids: tuple[int, ...] = ()
    statuses: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    destination: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    error: str | None = None

    def is_empty(self) -> bool:
        return not (
            self.ids or self.statuses or self.types or self.destination or self.since or self.until or self.error
        )

    def apply(self, query: sa.Select) -> sa.Select:
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
            matching = sa.select(Delivery.event_id)
            if self.destination:
                matching = matching.where(Delivery.destination == self.destination)
            if self.error:
                matching = matching.where(Delivery.last_error.ilike(f"%{_escape_like(self.error)}%", escape="\\"))
            query = query.where(Event.id.in_(matching))
        return query


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
