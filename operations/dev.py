"""What `relay dev` reads from the store: the stored type of an event (its terminal's lines) and
the vendor ids the store links subscribers to (its banner's note on a reset sandbox)."""

from __future__ import annotations

import sqlalchemy as sa

from relay.models import Event, SubscriberLink
from relay.runtime import Runtime


def event_type(runtime: Runtime, event_id: int) -> str | None:
    """The type stored for event `event_id` (as a sender wrote it: the caller decides what of it
    to show), or None."""
    with runtime.session() as session:
        return session.scalar(sa.select(Event.type).where(Event.id == event_id))


def linked_spruce_ids(runtime: Runtime) -> tuple[set[str], set[str]]:
    """The Spruce contacts and note conversations the store links subscribers to."""
    with runtime.session() as session:
        rows = session.execute(
            sa.select(SubscriberLink.spruce_contact_id, SubscriberLink.spruce_note_conversation_id)
        ).all()
    return {c for c, _ in rows if c}, {v for _, v in rows if v}
