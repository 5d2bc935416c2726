"""Running one delivery: claim it, call its handler, record the outcome.

This is the simple retry of the pipeline issue: transient failures retry with capped
exponential backoff up to MAX_ATTEMPTS, 429s wait as asked without spending an attempt, other
4xx fail with the vendor's message. Retry times live in the database (next_attempt_at); the
periodic sweep enqueues what is due, so nothing depends on the broker keeping a message.
"""
from __future__ import annotations

import logging
import random
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from schemas.sparkloop import validate_event
from web.db import session_scope
from web.models import Delivery, DeliveryStatus, Event, EventStatus, utcnow
from workers.context import DeliveryContext, DeliveryFailed, RetryLater
from workers.routing import handler_for
from workers.vendor_errors import VendorError

log = logging.getLogger("relay.delivery")

MAX_ATTEMPTS = 8
LEASE = timedelta(minutes=5)
MAX_BACKOFF_S = 3600
THROTTLE_DEFAULT_WAIT_S = 10.0
# Waits up to this long ride on a broker countdown; longer ones wait for the sweep.
COUNTDOWN_LIMIT_S = 300


def run_delivery(delivery_id: int) -> str:
    """Perform delivery `delivery_id` if it is due and pending; return its resulting status."""
    config = current_app.config["RELAY"]
    claimed = _claim(delivery_id)
    if claimed is None:
        return "skipped"
    delivery, event = claimed
    _, data, errors = validate_event(event.payload)
    if errors is not None or data is None:
        return _finish(delivery_id, failed="stored payload no longer validates; replay after a fix")

    ctx = DeliveryContext(
        delivery_id=delivery.id, event_type=event.type, data=data,
        received_at_ms=event.received_at_ms, config=config, steps=dict(delivery.steps or {}),
        save_steps=lambda steps: _save_steps(delivery_id, steps),
    )
    try:
        handler_for(event.type, delivery.destination)(ctx)
    except VendorError as err:
        if err.kind == "throttled":
            return _retry(delivery_id, str(err), err.status, err.retry_after or THROTTLE_DEFAULT_WAIT_S,
                          spend_attempt=False)
        if err.retryable:
            return _retry(delivery_id, str(err), err.status)
        return _finish(delivery_id, failed=str(err), status_code=err.status)
    except DeliveryFailed as err:
        return _finish(delivery_id, failed=str(err))
    except RetryLater as err:
        return _retry(delivery_id, str(err), None)
    except Exception as err:  # a bug or an unexpected library error: retry, then fail visibly
        # Only the class name: messages of arbitrary exceptions may quote payload values.
        log.error("delivery %s raised %s", delivery_id, type(err).__name__)
        return _retry(delivery_id, f"internal error ({type(err).__name__}); see worker logs", None)
    return _finish(delivery_id)


def _claim(delivery_id: int) -> tuple[Delivery, Event] | None:
    now = utcnow()
    with session_scope() as session:
        claimed = session.execute(
            sa.update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.PENDING,
                   Delivery.next_attempt_at <= now + timedelta(seconds=1))
            .values(status=DeliveryStatus.IN_FLIGHT, attempts=Delivery.attempts + 1,
                    lease_expires_at=now + LEASE, updated_at=now)
        ).rowcount
        if not claimed:
            session.rollback()
            return None
        delivery = session.get(Delivery, delivery_id)
        event = delivery.event
        if event.status == EventStatus.RECEIVED:
            event.status = EventStatus.PROCESSING
        session.commit()
        return delivery, event


def _save_steps(delivery_id: int, steps: dict) -> None:
    with session_scope() as session:
        session.execute(sa.update(Delivery).where(Delivery.id == delivery_id).values(steps=steps))
        session.commit()


def _retry(delivery_id: int, error: str, status_code: int | None,
           wait_s: float | None = None, spend_attempt: bool = True) -> str:
    with session_scope() as session:
        delivery = _locked(session, delivery_id)
        if spend_attempt and delivery.attempts >= MAX_ATTEMPTS:
            session.rollback()
            return _finish(delivery_id, failed=f"gave up after {delivery.attempts} attempts: {error}",
                           status_code=status_code)
        if not spend_attempt:
            delivery.attempts -= 1
        if wait_s is None:
            wait_s = _backoff(delivery.attempts, current_app.config["RELAY"].retry_base_s)
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = utcnow() + timedelta(seconds=wait_s)
        delivery.lease_expires_at = None
        delivery.last_error, delivery.last_status_code = error, status_code
        delivery.enqueued_at = None
        session.commit()
    log.info("delivery %s retry in %.1fs: %s", delivery_id, wait_s, error)
    if wait_s <= COUNTDOWN_LIMIT_S:
        from workers.queue import enqueue_deliveries

        enqueue_deliveries([delivery_id], countdown=wait_s)
    return DeliveryStatus.PENDING


def _backoff(attempts: int, base_s: float) -> float:
    delay = min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S)
    return delay * random.uniform(0.8, 1.2)


def _finish(delivery_id: int, failed: str | None = None, status_code: int | None = None) -> str:
    status = DeliveryStatus.FAILED if failed else DeliveryStatus.SUCCEEDED
    now = utcnow()
    with session_scope() as session:
        delivery = _locked(session, delivery_id)
        delivery.status, delivery.finished_at, delivery.lease_expires_at = status, now, None
        if failed:
            delivery.last_error, delivery.last_status_code = failed, status_code
        session.flush()
        _roll_up(delivery.event)
        session.commit()
    if failed:
        log.warning("delivery %s failed: %s", delivery_id, failed)
    return status


def _locked(session, delivery_id: int) -> Delivery:
    """The delivery, with its event row locked: two deliveries of one event finishing at once
    must not both miss the other's result when rolling the event status up."""
    event_id = session.scalar(sa.select(Delivery.event_id).where(Delivery.id == delivery_id))
    session.scalar(sa.select(Event).where(Event.id == event_id).with_for_update())
    return session.get(Delivery, delivery_id)


def _roll_up(event: Event) -> None:
    statuses = {d.status for d in event.deliveries}
    if statuses <= set(DeliveryStatus.TERMINAL):
        event.status = EventStatus.FAILED if DeliveryStatus.FAILED in statuses else EventStatus.DONE
