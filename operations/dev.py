"""What `relay dev` reads from the store: the stored type of an event (its terminal's lines) and
the ids the destinations remember of subscribers (its banner's note on a reset sandbox); and the
console's dev operator, made when dev's own store has none."""

from __future__ import annotations

import sqlalchemy as sa

from operations.accounts import OPERATOR, AccountView, add_account, list_accounts
from operations.audit import Actor
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


def add_dev_operator(runtime: Runtime, email: str, password: str, *, actor: Actor) -> AccountView | None:
    """An operator account for the console, when the store has none (audited as `actor`'s, as
    `relay users add` is); None when one exists: whoever made it signs in with it."""
    if any(account.role == OPERATOR for account in list_accounts(runtime)):
        return None
    return add_account(runtime, email, OPERATOR, password, actor=actor)
