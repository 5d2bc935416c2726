"""The local identity map: SparkLoop subscriber -> Spruce contact and note conversation."""
from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from schemas.sparkloop import Subscriber
from web.db import session_scope
from web.models import SubscriberLink


def subscriber_key(subscriber: Subscriber) -> str:
    if subscriber.id:
        return f"id:{subscriber.id}"
    return "email:" + hashlib.sha256((subscriber.email or "").encode()).hexdigest()


def lookup(subscriber: Subscriber) -> SubscriberLink | None:
    with session_scope() as session:
        return session.scalar(
            sa.select(SubscriberLink).where(SubscriberLink.subscriber_key == subscriber_key(subscriber))
        )


def remember(subscriber: Subscriber, **spruce_ids: str) -> None:
    """Save spruce_contact_id and/or spruce_note_conversation_id for the subscriber."""
    key = subscriber_key(subscriber)
    for _ in range(2):  # a concurrent first insert for the same subscriber: update theirs
        with session_scope() as session:
            link = session.scalar(sa.select(SubscriberLink).where(SubscriberLink.subscriber_key == key))
            if link is None:
                link = SubscriberLink(subscriber_key=key)
                session.add(link)
            for name, value in spruce_ids.items():
                setattr(link, name, value)
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
    raise RuntimeError("could not save the subscriber link after a concurrent insert")
