"""What each destination remembers of a subscriber between deliveries (its ids at the vendor,
the versions of what the vendor holds), so that a known subscriber costs no search call: a row
per subscriber and destination (relay.models.DestinationLink), whose data holds the keys the
destination declares (Destination.remembers). A destination's deliveries for a subscriber run
one at a time (workers.locks, per subscriber and destination), and no other destination writes
its row: a delivery reads and saves its own keys without a lock of the row.

A subscriber is keyed by their SparkLoop id, or, without one, by the digest of their email
that relay.subjects makes (keyed with RELAY_LOOKUP_KEY when set). Links made before the lookup
key was set carry the plain SHA-256 digest: they are still found, and take the keyed digest the
next time they are saved. Reads and saves go to the runtime's store (relay.runtime), keyed with
its RELAY_LOOKUP_KEY.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from relay.destinations import Destination
from relay.models import DestinationLink
from relay.runtime import Runtime
from relay.subjects import email_digest
from schemas.sparkloop import Subscriber


def id_key(subscriber_id: str) -> str:
    return f"id:{subscriber_id}"


def email_key(email: str, lookup_key: str | None) -> str:
    return "email:" + email_digest(email, lookup_key)


def subscriber_key(subscriber: Subscriber, lookup_key: str | None) -> str:
    if subscriber.id:
        return id_key(subscriber.id)
    return email_key(subscriber.email or "", lookup_key)


def _keys(subscriber: Subscriber, lookup_key: str | None) -> list[str]:
    """Its key, then the key it had before RELAY_LOOKUP_KEY was set (if that differs)."""
    key = subscriber_key(subscriber, lookup_key)
    if subscriber.id or not lookup_key:
        return [key]
    return [key, email_key(subscriber.email or "", None)]


def _find(session: Session, destination: str, keys: list[str]) -> DestinationLink | None:
    links = {
        link.subscriber_key: link
        for link in session.scalars(
            sa.select(DestinationLink).where(
                DestinationLink.destination == destination, DestinationLink.subscriber_key.in_(keys)
            )
        )
    }
    return next((links[key] for key in keys if key in links), None)


def recall(runtime: Runtime, destination: str, subscriber: Subscriber) -> dict[str, Any]:
    """What `destination` remembers of the subscriber (empty when nothing)."""
    with runtime.session() as session:
        link = _find(session, destination, _keys(subscriber, runtime.config.lookup_key))
        return dict(link.data) if link else {}


def remember(runtime: Runtime, destination: str, subscriber: Subscriber, **values: Any) -> None:
    """Save `values` among what `destination` remembers of the subscriber; a None forgets its key.
    Callers hold the subscriber's lock for the destination (workers.locks.subject_locks)."""
    keys = _keys(subscriber, runtime.config.lookup_key)
    for _ in range(2):  # a concurrent first insert (an erasure's or a lease that ran out): update theirs
        with runtime.session() as session:
            link = _find(session, destination, keys)
            if link is None:
                link = DestinationLink(subscriber_key=keys[0], destination=destination, data={})
                session.add(link)
            link.subscriber_key = keys[0]
            merged = link.data | values
            link.data = {key: value for key, value in merged.items() if value is not None}
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
    raise RuntimeError("could not save the subscriber's link after a concurrent insert")


def held(session: Session, keys: list[str], destinations: Iterable[Destination]) -> list[str]:
    """What the links under `keys` hold for `destinations`, named as each destination's
    `remembers` names them, one entry per stored value (a person may have links under
    several keys)."""
    by_name = {destination.name: destination for destination in destinations}
    return [
        by_name[link.destination].remembers.get(key, f"{link.destination} {key}")
        for link in _links(session, keys, list(by_name))
        for key, value in link.data.items()
        if value
    ]


def kept(session: Session, keys: list[str]) -> bool:
    """Whether any destination remembers something under `keys`."""
    return (
        session.scalar(sa.select(DestinationLink.id).where(DestinationLink.subscriber_key.in_(keys)).limit(1))
        is not None
    )


def unlink(session: Session, keys: list[str], destinations: Iterable[Destination]) -> list[str]:
    """Drop what `held` names, in the session's transaction (the caller commits). The next
    delivery finds or creates again what was dropped."""
    destinations = list(destinations)
    dropped = held(session, keys, destinations)
    for link in _links(session, keys, [destination.name for destination in destinations]):
        session.delete(link)
    return dropped


def _links(session: Session, keys: list[str], destinations: list[str]) -> list[DestinationLink]:
    return list(
        session.scalars(
            sa.select(DestinationLink)
            .where(DestinationLink.subscriber_key.in_(keys), DestinationLink.destination.in_(destinations))
            .order_by(DestinationLink.id)
        )
    )
