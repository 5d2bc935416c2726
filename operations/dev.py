"""What `relay dev` reads from the store: the stored type of an event (its terminal's lines) and
the ids the destinations remember of subscribers (its banner's note on a reset sandbox)."""

from __future__ import annotations

import sqlalchemy as sa

from relay.models import DestinationLink, Event
from relay.runtime import Runtime


def event_type(runtime: Runtime, event_id: int) -> str | None:
    """The type stored for event `event_id` (as a sender wrote it: the caller decides what of it
    to show), or None."""
    with runtime.session() as session:
        return session.scalar(sa.select(Event.type).where(Event.id == event_id))


def remembered_ids(runtime: Runtime, destination: str, key: str) -> set[str]:
    """The values `destination` remembers under `key` (workers.identity) for any subscriber."""
    with runtime.session() as session:
        data = session.scalars(sa.select(DestinationLink.data).where(DestinationLink.destination == destination))
        return {str(kept[key]) for kept in data if kept.get(key)}
