"""Running one delivery: claim it, take the subscriber's lock, call its handler, and record
the outcome, every outcome classified in one place:

- succeeded / superseded: done;
- deferred (shared throttle, open breaker, a 429, a busy subscriber, a rejected credential
  while the breaker cools down): pending again at the exact time, no attempt spent;
- transient (timeouts, connection errors, 5xx, 408/409/425): retried with capped exponential
  backoff whose jitter never fires almost at once, until the attempt limit or the maximum age;
- permanent (other 4xx, a payload that cannot be delivered): failed with the vendor's message.

Retry times live in the database (next_attempt_at). Short waits also ride on a broker
countdown; long ones wait for the sweep, because Redis redelivers a task delayed past its
visibility timeout again and again.
"""
from __future__ import annotations

import logging
import random
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from schemas.sparkloop import affected_subscribers, validate_event
from web.db import session_scope
from web.models import Delivery, DeliveryStatus, Event, EventStatus, utcnow
from workers import identity
from workers.context import DeliveryContext, DeliveryFailed, RetryLater
from workers.coordination import (
    THROTTLED_DEFAULT_WAIT_S, Deferred, redis_for, replaying, reserved_slot, subject_locks,
)
from workers.queue import enqueue_deliveries, queue_for
from workers.routing import handler_for
from workers.vendor_errors import VendorError

log = logging.getLogger("relay.delivery")

LEASE = timedelta(minutes=5)
MAX_BACKOFF_S = 3600
AUTH_RECHECK_S = 60.0
COUNTDOWN_LIMIT_S = 300
THROTTLE_SLOT = "throttle.slot"  # the slot a deferred delivery reserved, kept with its steps


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
        delivery_id=delivery.id, event_id=event.id, event_type=event.type, data=data,
        received_at_ms=event.received_at_ms, config=config, steps=dict(delivery.steps or {}),
        save_steps=lambda steps: _save_steps(delivery_id, steps),
    )
    subjects = [identity.subscriber_key(s) for _, s in affected_subscribers(event.type, data)]
    slot_token = reserved_slot.set(ctx.steps.pop(THROTTLE_SLOT, None))
    replay_token = replaying.set(delivery.replayed_at is not None)
    try:
        with subject_locks(redis_for(config), delivery.destination, subjects):
            outcome = handler_for(event.type, delivery.destination)(ctx)
    except Deferred as deferred:
        return _reschedule(delivery_id, deferred.reason, None, deferred.wait_s,
                           spend_attempt=False, slot=deferred.slot)
    except VendorError as err:
        if err.kind == "throttled":
            return _reschedule(delivery_id, str(err), err.status,
                               err.retry_after or THROTTLED_DEFAULT_WAIT_S, spend_attempt=False)
        if err.kind == "auth":  # the breaker is open for this account; wait for it
            return _reschedule(delivery_id, str(err), err.status, AUTH_RECHECK_S, spend_attempt=False)
        if err.retryable:
            return _reschedule(delivery_id, str(err), err.status)
        return _finish(delivery_id, failed=str(err), status_code=err.status)
    except DeliveryFailed as err:
        return _finish(delivery_id, failed=str(err))
    except RetryLater as err:
        return _reschedule(delivery_id, str(err), None)
    except Exception as err:  # a bug or an unexpected library error: retry, then fail visibly
        # Only the class name: messages of arbitrary exceptions may quote payload values.
        log.error("delivery %s raised %s", delivery_id, type(err).__name__)
        return _reschedule(delivery_id, f"internal error ({type(err).__name__}); see worker logs", None)
    finally:
        reserved_slot.reset(slot_token)
        replaying.reset(replay_token)
    return _finish(delivery_id, superseded=outcome == DeliveryStatus.SUPERSEDED)


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


def _reschedule(delivery_id: int, reason: str, status_code: int | None,
                wait_s: float | None = None, spend_attempt: bool = True,
                slot: dict | None = None) -> str:
    config = current_app.config["RELAY"]
    with session_scope() as session:
        delivery = _locked(session, delivery_id)
        # A replay starts a new life: its age counts from the replay.
        age_s = (utcnow() - (delivery.replayed_at or delivery.created_at)).total_seconds()
        if not spend_attempt:
            delivery.attempts -= 1
        gave_up = None
        if spend_attempt and delivery.attempts >= config.retry_max_attempts:
            gave_up = f"gave up after {delivery.attempts} attempts"
        elif age_s >= config.retry_max_age_s:  # deferrals too: nothing stays pending forever
            gave_up = f"gave up after {age_s / 3600:.1f} h"
        if gave_up:
            session.commit()
            return _finish(delivery_id, failed=f"{gave_up}: {reason}", status_code=status_code)
        if wait_s is None:
            wait_s = backoff(delivery.attempts, config.retry_base_s)
        delivery.status = DeliveryStatus.PENDING
        delivery.steps = {k: v for k, v in (delivery.steps or {}).items() if k != THROTTLE_SLOT}
        if slot:
            delivery.steps[THROTTLE_SLOT] = slot
        delivery.next_attempt_at = utcnow() + timedelta(seconds=wait_s)
        delivery.lease_expires_at = None
        delivery.enqueued_at = None
        queue = queue_for(delivery)
        # Why it is still pending, for the operator. Relay's own deferrals (throttle, breaker,
        # lock) do not hide the vendor error that led to them.
        if spend_attempt or status_code is not None or not delivery.last_error:
            delivery.last_error, delivery.last_status_code = reason, status_code
        session.commit()
    log.info("delivery %s %s in %.1fs: %s", delivery_id,
             "retry" if spend_attempt else "deferred", wait_s, reason)
    if wait_s <= COUNTDOWN_LIMIT_S:
        enqueue_deliveries([delivery_id], countdown=wait_s, queue=queue)
    return DeliveryStatus.PENDING


def backoff(attempts: int, base_s: float) -> float:
    """Capped exponential backoff with "equal jitter": at least half the step, never ~0."""
    step = min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S)
    return step / 2 + random.uniform(0, step / 2)


def _finish(delivery_id: int, failed: str | None = None, status_code: int | None = None,
            superseded: bool = False) -> str:
    status = (DeliveryStatus.FAILED if failed else
              DeliveryStatus.SUPERSEDED if superseded else DeliveryStatus.SUCCEEDED)
    now = utcnow()
    with session_scope() as session:
        delivery = _locked(session, delivery_id)
        delivery.status, delivery.finished_at, delivery.lease_expires_at = status, now, None
        if failed:
            delivery.last_error, delivery.last_status_code = failed, status_code
        session.flush()
        _roll_up(delivery.event)
        destination = delivery.destination
        session.commit()
    if failed:
        log.warning("delivery %s failed: %s", delivery_id, failed)
        _report_failure(delivery_id, destination, failed)
    return status


def _report_failure(delivery_id: int, destination: str, error: str) -> None:
    """Once per delivery, when it reaches the dead-letter state. The error text is Relay's or
    the vendor's message, which never carries payload values."""
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("destination", destination)
        scope.set_extra("delivery_id", delivery_id)
        sentry_sdk.capture_message(f"delivery to {destination} failed: {error}", level="error")


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
