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
its RELAY_LOOKUP_KEY; a delivery's go through the connection its run holds (`recall_on`,
`remember_on`, as Core statements built once: workers.run_store says why).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
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


LINKS = DestinationLink.metadata.tables[DestinationLink.__tablename__]
# A subscriber has one key, or two (`_keys`): a statement for each count, as an expanding IN
# would render the statement anew at every delivery.
_FIND = sa.select(LINKS.c.id, LINKS.c.subscriber_key, LINKS.c.data)
FIND = {
    1: _FIND.where(
        LINKS.c.destination == sa.bindparam("link_destination"), LINKS.c.subscriber_key == sa.bindparam("key0")
    ),
    2: _FIND.where(
        LINKS.c.destination == sa.bindparam("link_destination"),
        LINKS.c.subscriber_key.in_([sa.bindparam("key0"), sa.bindparam("key1")]),
    ),
}
UPDATE = (
    sa.update(LINKS)
    .where(LINKS.c.id == sa.bindparam("link_id"))
    .values(subscriber_key=sa.bindparam("key"), data=sa.bindparam("values"))
)
INSERT = sa.insert(LINKS).values(
    subscriber_key=sa.bindparam("key"), destination=sa.bindparam("link_destination"), data=sa.bindparam("values")
)


def _find(connection: Connection, destination: str, keys: list[str]) -> Row | None:
    found = connection.execute(
        FIND[len(keys)], {"link_destination": destination, **{f"key{n}": key for n, key in enumerate(keys)}}
    )
    links = {link.subscriber_key: link for link in found}
    return next((links[key] for key in keys if key in links), None)


def recall(runtime: Runtime, destination: str, subscriber: Subscriber) -> dict[str, Any]:
    """What `destination` remembers of the subscriber (empty when nothing)."""
    with runtime.db.engine.connect() as connection:
        return recall_on(connection, runtime.config.lookup_key, destination, subscriber)


def remember(runtime: Runtime, destination: str, subscriber: Subscriber, **values: Any) -> None:
    """Save `values` among what `destination` remembers of the subscriber (see `remember_on`)."""
    with runtime.db.engine.connect() as connection:
        remember_on(connection, runtime.config.lookup_key, destination, subscriber, **values)


def recall_on(connection: Connection, lookup_key: str | None, destination: str, subscriber: Subscriber) -> dict:
    """`recall` on a connection a run holds (workers.context.DeliveryContext.recall); ends its
    read transaction, so that no snapshot stays open through a vendor's call."""
    link = _find(connection, destination, _keys(subscriber, lookup_key))
    connection.commit()
    return dict(link.data) if link else {}


def remember_on(
    connection: Connection, lookup_key: str | None, destination: str, subscriber: Subscriber, **values: Any
) -> None:
    """Save `values` among what `destination` remembers of the subscriber; a None forgets its key.
    Callers hold the subscriber's lock for the destination (workers.locks.subject_locks)."""
    keys = _keys(subscriber, lookup_key)
    for _ in range(2):  # a concurrent first insert (an erasure's or a lease that ran out): update theirs
        link = _find(connection, destination, keys)
        merged = (link.data if link else {}) | values
        kept = {key: value for key, value in merged.items() if value is not None}
        try:
            if link is None:
                connection.execute(INSERT, {"key": keys[0], "link_destination": destination, "values": kept})
            else:
                connection.execute(UPDATE, {"link_id": link.id, "key": keys[0], "values": kept})
            connection.commit()
            return
        except IntegrityError:
            connection.rollback()
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
