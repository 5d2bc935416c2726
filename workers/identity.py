"""The local identity map: SparkLoop subscriber -> Spruce contact and note conversation, and the
versions of the Sprig attributes Sprig holds for them.

A subscriber is keyed by their SparkLoop id, or, without one, by the digest of their email
that relay.subjects makes (keyed with RELAY_LOOKUP_KEY when set). Links made before the lookup
key was set carry the plain SHA-256 digest: they are still found, and take the keyed digest the
next time they are saved. Reads and saves go to the runtime's store (relay.runtime), keyed with
its RELAY_LOOKUP_KEY.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from relay.models import SubscriberLink
from relay.runtime import Runtime
from relay.subjects import email_digest
from schemas.sparkloop import Subscriber

# What a link holds for each destination, and how output names it (never its value).
LINKED = {
    "spruce": {"spruce_contact_id": "Spruce contact id", "spruce_note_conversation_id": "Spruce note conversation id"},
    "sprig": {"sprig_attribute_versions": "Sprig attribute versions"},
}


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


def _find(session, keys: list[str]) -> SubscriberLink | None:
    links = {
        link.subscriber_key: link
        for link in session.scalars(sa.select(SubscriberLink).where(SubscriberLink.subscriber_key.in_(keys)))
    }
    return next((links[key] for key in keys if key in links), None)


def lookup(runtime: Runtime, subscriber: Subscriber) -> SubscriberLink | None:
    with runtime.session() as session:
        return _find(session, _keys(subscriber, runtime.config.lookup_key))


def sprig_versions(runtime: Runtime, subscriber: Subscriber) -> dict[str, list[int]]:
    link = lookup(runtime, subscriber)
    return dict(link.sprig_attribute_versions or {}) if link else {}


def remember(runtime: Runtime, subscriber: Subscriber, **fields) -> None:
    """Save spruce_contact_id, spruce_note_conversation_id or sprig_attribute_versions.
    Callers hold the subscriber's lock (workers.locks.subject_locks)."""
    keys = _keys(subscriber, runtime.config.lookup_key)
    for _ in range(2):  # a concurrent first insert for the same subscriber: update theirs
        with runtime.session() as session:
            link = _find(session, keys)
            if link is None:
                link = SubscriberLink(subscriber_key=keys[0])
                session.add(link)
            link.subscriber_key = keys[0]
            for name, value in fields.items():
                setattr(link, name, value)
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
    raise RuntimeError("could not save the subscriber link after a concurrent insert")


def held(session: Session, keys: list[str], destinations: list[str]) -> list[str]:
    """What the links under `keys` hold for `destinations`, named as LINKED names them, one
    entry per stored value (a person may have links under several keys)."""
    return [
        name
        for link in _links(session, keys)
        for destination in destinations
        for field, name in LINKED[destination].items()
        if getattr(link, field)
    ]


def unlink(session: Session, keys: list[str], destinations: list[str]) -> list[str]:
    """Drop what `held` names, in the session's transaction (the caller commits); a link left
    holding nothing goes. The next delivery finds or creates again what was dropped."""
    dropped = held(session, keys, destinations)
    for link in _links(session, keys):
        for destination in destinations:
            for field in LINKED[destination]:
                setattr(link, field, None)
        if not any(getattr(link, field) for fields in LINKED.values() for field in fields):
            session.delete(link)
    return dropped


def _links(session: Session, keys: list[str]) -> list[SubscriberLink]:
    return list(
        session.scalars(
            sa.select(SubscriberLink).where(SubscriberLink.subscriber_key.in_(keys)).order_by(SubscriberLink.id)
        )
    )
