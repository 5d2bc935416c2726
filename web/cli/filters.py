"""The filters every `relay events` command shares: which events an operator means."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

import click
import sqlalchemy as sa

from relay.models import Delivery, Event, EventStatus
from schemas.events import DESTINATIONS
from web.cli.support import When

EVENT_STATUSES = (EventStatus.RECEIVED, EventStatus.PROCESSING, EventStatus.DONE,
                  EventStatus.FAILED, EventStatus.INVALID, EventStatus.UNHANDLED)


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
        return not (self.ids or self.statuses or self.types or self.destination or self.since
                    or self.until or self.error)

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
                matching = matching.where(Delivery.last_error.ilike(f"%{_escape_like(self.error)}%",
                                                                    escape="\\"))
            query = query.where(Event.id.in_(matching))
        return query


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filter_options(command):
    """Adds the shared filter options; the command receives them as `filters` (EventFilter)."""

    @click.option("--status", "statuses", multiple=True, type=click.Choice(EVENT_STATUSES),
                  help="Only events in this status (repeatable).")
    @click.option("--type", "types", multiple=True, metavar="TYPE",
                  help="Only events of this SparkLoop type, e.g. reward_unlocked (repeatable).")
    @click.option("--destination", type=click.Choice(DESTINATIONS),
                  help="Only events with a delivery to this vendor.")
    @click.option("--since", type=When(), metavar="WHEN",
                  help="Received at or after WHEN: an ISO date or date-time (UTC), or an age like 2h, 7d.")
    @click.option("--until", type=When(), metavar="WHEN", help="Received before WHEN (same forms).")
    @click.option("--error", metavar="TEXT",
                  help="Only events with a delivery whose last error contains TEXT (any case).")
    @functools.wraps(command)
    def wrapper(*args, statuses, types, destination, since, until, error, ids=(), **kwargs):
        if since and until and since >= until:
            raise click.BadParameter("--since must be earlier than --until", param_hint="--since")
        filters = EventFilter(ids=tuple(ids), statuses=statuses, types=types,
                              destination=destination, since=since, until=until, error=error)
        return command(*args, filters=filters, **kwargs)

    return wrapper
