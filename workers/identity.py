"""The local identity map: SparkLoop subscriber -> Spruce contact and note conversation."""
from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from schemas.sparkloop import Subscriber
from relay.db import session_scope
from relay.models import SubscriberLink


def subscriber_key(subscriber: Subscriber) -> str:
    if subscriber.id:
        return f"id:{subscriber.id}"
    return "email:" + hashlib.sha256((subscriber.email or "").encode()).hexdigest()


def lookup(subscriber: Subscriber) -> SubscriberLink | None:
    with session_scope() as session:
        return session.scalar(
            sa.select(SubscriberLink).where(SubscriberLink.subscriber_key == subscriber_key(subscriber))
        )


def sprig_versions(subscriber: Subscriber) -> dict[str, list[int]]:
    link = lookup(subscriber)
    return dict(link.sprig_attribute_versions or {}) if link else {}


def remember(subscriber: Subscriber, **fields) -> None:
    """Save spruce_contact_id, spruce_note_conversation_id or sprig_attribute_versions.
    Callers hold the subscriber's lock (workers.locks.subject_locks)."""
    key = subscriber_key(subscriber)
    for _ in range(2):  # a concurrent first insert for the same subscriber: update theirs
        with session_scope() as session:
            link = session.scalar(sa.select(SubscriberLink).where(SubscriberLink.subscriber_key == key))
            if link is None:
                link = SubscriberLink(subscriber_key=key)
                session.add(link)
            for name, value in fields.items():
                setattr(link, name, value)
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
    raise RuntimeError("could not save the subscriber link after a concurrent insert")
