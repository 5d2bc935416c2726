"""Publishing delivery work to the broker. The database, not the broker, is the source of truth:
a publish that fails is only logged, and the periodic sweep enqueues the delivery later."""
from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import current_app

from web.db import session_scope
from web.models import Delivery, utcnow

log = logging.getLogger("relay.queue")

LIVE_QUEUE = "celery"
# Replayed deliveries wait in a queue of their own, so a large replay never stands between
# live deliveries and the workers (workers take from both queues in turn).
REPLAY_QUEUE = "relay-replay"


def queue_for(delivery: Delivery) -> str:
    return REPLAY_QUEUE if delivery.replayed_at is not None else LIVE_QUEUE


def enqueue_deliveries(delivery_ids, countdown: float | None = None, queue: str = LIVE_QUEUE) -> int:
    """Publish deliver(id) for each id on `queue`; return how many reached the broker."""
    celery_app = current_app.extensions["celery"]
    published = []
    for delivery_id in delivery_ids:
        try:
            # retry=False: with the broker down, answer the webhook now; the sweep catches up.
            celery_app.send_task(
                "relay.deliver", args=[delivery_id], countdown=countdown, retry=False, queue=queue,
            )
        except Exception as exc:  # any broker failure: kombu raises several unrelated types
            log.warning("broker unavailable, delivery %s left for the sweep (%s)",
                        delivery_id, type(exc).__name__)
            break
        published.append(delivery_id)
    if published:
        with session_scope() as session:
            session.execute(
                sa.update(Delivery).where(Delivery.id.in_(published)).values(enqueued_at=utcnow())
            )
            session.commit()
    return len(published)
