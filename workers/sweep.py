"""The periodic sweep (run by beat): recover work the broker does not hold.

- deliveries whose lease expired (their worker died mid-call) go back to pending;
- pending deliveries that are due and not recently enqueued (broker down at accept time, a
  long retry wait, a flushed Redis) are enqueued again.
A duplicate message is harmless: only one worker can claim a pending delivery.
"""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from relay.db import session_scope
from relay.models import Delivery, DeliveryStatus, Lane, utcnow
from relay.queue import CATCH_UP_QUEUE, enqueue_deliveries

REQUEUE_AFTER = timedelta(minutes=5)
BATCH = 500


def sweep(now=None) -> dict[str, int]:
    now = now or utcnow()
    with session_scope() as session:
        released = session.execute(
            sa.update(Delivery)
            .where(Delivery.status == DeliveryStatus.IN_FLIGHT, Delivery.lease_expires_at < now)
            .values(status=DeliveryStatus.PENDING, lease_expires_at=None, next_attempt_at=now,
                    enqueued_at=None, last_error="worker lost during the attempt (lease expired)")
        ).rowcount
        session.commit()
        due = session.execute(
            sa.select(Delivery.id, Delivery.lane)
            .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now,
                   sa.or_(Delivery.enqueued_at.is_(None), Delivery.enqueued_at < now - REQUEUE_AFTER))
            .order_by(Delivery.next_attempt_at)
            .limit(BATCH)
        ).all()
    live = [delivery_id for delivery_id, lane in due if lane != Lane.CATCH_UP]
    catch_up = [delivery_id for delivery_id, lane in due if lane == Lane.CATCH_UP]
    enqueued = enqueue_deliveries(live) + enqueue_deliveries(catch_up, queue=CATCH_UP_QUEUE)
    return {"released": released, "enqueued": enqueued}
