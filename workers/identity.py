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
its RELAY_LOOKUP_KEY. A delivery's go through its run's connection, as Core statements built
once (workers.run_store says why), and its saves are written with the run's next write
(workers.context).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from relay.destinations import Destination
from relay.models import DestinationLink, utcnow
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
# Written by id when the row was found (it may carry the key from before RELAY_LOOKUP_KEY was
# set: the current one replaces it), else inserted, or updated if a row appeared meanwhile.
UPDATE = (
    sa.update(LINKS)
    .where(LINKS.c.id == sa.bindparam("link_id"))
    .values(subscriber_key=sa.bindparam("key"), data=sa.bindparam("values"), updated_at=sa.bindparam("now"))
)
_ROW: dict[str, Any] = {
    "subscriber_key": sa.bindparam("key"),
    "destination": sa.bindparam("link_destination"),
    "data": sa.bindparam("values"),
    "updated_at": sa.bindparam("now"),
}
_UNIQUE = ["subscriber_key", "destination"]
_NEWER: dict[str, Any] = {"data": sa.bindparam("values"), "updated_at": sa.bindparam("now")}
UPSERT = {
    "postgresql": postgresql.insert(LINKS).values(_ROW).on_conflict_do_update(index_elements=_UNIQUE, set_=_NEWER),
    "sqlite": sqlite.insert(LINKS).values(_ROW).on_conflict_do_update(index_elements=_UNIQUE, set_=_NEWER),
}


@dataclass(frozen=True)
class Link:
    """What a run knows of a subscriber's row for one destination: its current key, the row's id
    if it was found (None: not stored yet), and what it holds."""

    key: str
    id: int | None
    data: dict[str, Any]

    def with_values(self, values: dict[str, Any]) -> Link:
        """`values` added to what it holds; a None forgets its key."""
        merged = self.data | values
        return replace(self, data={key: value for key, value in merged.items() if value is not None})

    def write(self, destination: str, dialect: str) -> tuple[sa.Executable, dict[str, Any]]:
        """The statement that stores it, and its parameters."""
        values = {"key": self.key, "values": self.data, "now": utcnow()}
        if self.id is not None:
            return UPDATE, {**values, "link_id": self.id}
        return UPSERT[dialect], {**values, "link_destination": destination}


def find(connection: Connection, lookup_key: str | None, destination: str, subscriber: Subscriber) -> Link:
    """The subscriber's link for `destination`, as stored (empty if none)."""
    keys = _keys(subscriber, lookup_key)
    found = connection.execute(
        FIND[len(keys)], {"link_destination": destination, **{f"key{n}": key for n, key in enumerate(keys)}}
    )
    links = {link.subscriber_key: link for link in found}
    row = next((links[key] for key in keys if key in links), None)
    return Link(keys[0], row.id, dict(row.data)) if row else Link(keys[0], None, {})


def recall(runtime: Runtime, destination: str, subscriber: Subscriber) -> dict[str, Any]:
    """What `destination` remembers of the subscriber (empty when nothing). A delivery reads it
    through its context (workers.context.DeliveryContext.recall)."""
    with runtime.db.engine.connect() as connection:
        return find(connection, runtime.config.lookup_key, destination, subscriber).data


def remember(runtime: Runtime, destination: str, subscriber: Subscriber, **values: Any) -> None:
    """Save `values` among what `destination` remembers of the subscriber; a None forgets its key.
    Callers hold the subscriber's lock for the destination (workers.locks.subject_locks); a
    delivery saves through its context (workers.context.DeliveryContext.remember)."""
    with runtime.db.engine.connect() as connection:
        link = find(connection, runtime.config.lookup_key, destination, subscriber).with_values(values)
        connection.execute(*link.write(destination, connection.dialect.name))
        connection.commit()


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
