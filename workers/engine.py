"""Running one delivery: claim it, take the subscriber's lock, let its destination deliver, and
record the outcome that `workers.classify` decides.

Retry times live in the database (next_attempt_at). Short waits also ride on a broker
countdown; long ones wait for the sweep, because Redis redelivers a task delayed past its
visibility timeout again and again.
"""
from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from relay.config import Config
from relay.db import get_db, session_scope
from relay.models import Delivery, DeliveryStatus, Event, EventStatus, Lane, utcnow
from relay.observability import report, report_exception
from relay.queue import enqueue_deliveries, queue_for
from schemas.events import EVENTS, sends, validate_event
from schemas.personal import personal_strings
from workers import identity
from workers.classify import Action, Verdict, backoff, classify
from workers.context import DeliveryContext, Progress
from workers.destinations import DESTINATIONS
from workers.guard import redis_client
from workers.lease import LEASE, Claim, kept_alive
from workers.locks import subject_locks
from workers.throttle import Pacing, Slot

log = logging.getLogger("relay.delivery")

COUNTDOWN_LIMIT_S = 300


def run_delivery(delivery_id: int, config: Config) -> str:
    """Perform delivery `delivery_id` if it is due and pending; return its resulting status."""
    claimed = _claim(delivery_id)
    if claimed is None:
        return "skipped"
    claim, delivery, event = claimed
    _, data, errors = validate_event(event.payload)
    if errors is not None or data is None:
        return _finish(claim, failed="stored payload no longer validates; replay after a fix")

    destination = DESTINATIONS[delivery.destination]
    pacing = Pacing(lane=Lane(delivery.lane), reserved=Slot.from_json(delivery.throttle_slot))
    ctx = DeliveryContext(
        delivery_id=delivery.id, event_id=event.id, event_type=event.type, data=data,
        subscribers=EVENTS[event.type].subscribers(data), received_at_ms=event.received_at_ms,
        config=config, client=destination.client(config).for_run(pacing, personal_strings(event.payload)),
        progress=Progress(delivery.progress or {}, delivery.step_times or {},
                          save=lambda steps, times: _save_progress(claim, steps, times)),
    )
    subjects = [identity.subscriber_key(s) for _, s in ctx.subscribers]
    try:
        with subject_locks(redis_client(config.redis_url), delivery.destination, subjects) as locks, \
                kept_alive(claim, locks, get_db()):
            outcome = destination.deliver(ctx, sends(event.type, delivery.destination))
    except Exception as exc:  # every outcome, expected or not, goes through the one classifier
        verdict = classify(exc)
        if verdict.trace:
            report_exception(exc, tags={"destination": delivery.destination, "event_type": event.type})
        return _apply(claim, verdict, config)
    return _finish(claim, superseded=outcome == DeliveryStatus.SUPERSEDED)


def _claim(delivery_id: int) -> tuple[Claim, Delivery, Event] | None:
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
        return Claim(delivery_id, delivery.attempts), delivery, event


def _save_progress(claim: Claim, steps: dict, times: dict) -> None:
    # Fenced like every write of a run: a run whose lease was taken over records nothing.
    with session_scope() as session:
        session.execute(sa.update(Delivery).where(claim.where()).values(progress=steps, step_times=times))
        session.commit()


def _apply(claim: Claim, verdict: Verdict, config: Config) -> str:
    if verdict.action == Action.FAIL:
        return _finish(claim, failed=verdict.reason, status_code=verdict.status_code, trace=verdict.trace)
    deferred = verdict.action == Action.DEFER
    with session_scope() as session:
        delivery = _locked(session, claim)
        if delivery is None:
            return _lost(claim)
        if deferred:
            delivery.deferrals += 1
        # A replay starts a new life: its age counts from the replay.
        age_s = (utcnow() - (delivery.replayed_at or delivery.created_at)).total_seconds()
        failures = delivery.attempts - delivery.deferrals
        gave_up = None
        if not deferred and failures >= config.retry_max_attempts:
            gave_up = f"gave up after {failures} failed attempts"
        elif age_s >= config.retry_max_age_s:  # deferrals too: nothing stays pending forever
            gave_up = f"gave up after {age_s / 3600:.1f} h"
        if gave_up:
            session.commit()
            return _finish(claim, failed=f"{gave_up}: {verdict.reason}", status_code=verdict.status_code,
                           trace=verdict.trace)
        wait_s = verdict.wait_s if verdict.wait_s is not None else backoff(failures, config.retry_base_s)
        delivery.status = DeliveryStatus.PENDING
        delivery.throttle_slot = verdict.slot.to_json() if verdict.slot else None
        delivery.next_attempt_at = utcnow() + timedelta(seconds=wait_s)
        delivery.lease_expires_at = None
        delivery.enqueued_at = None
        queue = queue_for(delivery.lane)
        # Why it is still pending, for the operator. Relay's own deferrals (throttle, breaker,
        # lock) do not hide the vendor error that led to them.
        if not deferred or verdict.status_code is not None or not delivery.last_error:
            delivery.last_error, delivery.last_status_code = verdict.reason, verdict.status_code
            delivery.last_error_trace = list(verdict.trace) or None
        session.commit()
    log.info("delivery %s %s in %.1fs: %s", claim.delivery_id, verdict.action, wait_s, verdict.reason)
    if wait_s <= COUNTDOWN_LIMIT_S:
        enqueue_deliveries([claim.delivery_id], countdown=wait_s, queue=queue)
    return DeliveryStatus.PENDING


def _finish(claim: Claim, failed: str | None = None, status_code: int | None = None,
            superseded: bool = False, trace: tuple[str, ...] = ()) -> str:
    status = (DeliveryStatus.FAILED if failed else
              DeliveryStatus.SUPERSEDED if superseded else DeliveryStatus.SUCCEEDED)
    now = utcnow()
    with session_scope() as session:
        delivery = _locked(session, claim)
        if delivery is None:
            return _lost(claim)
        delivery.status, delivery.finished_at, delivery.lease_expires_at = status, now, None
        delivery.throttle_slot = None
        if failed:
            delivery.last_error, delivery.last_status_code = failed, status_code
            delivery.last_error_trace = list(trace) or None
        session.flush()
        _roll_up(delivery.event)
        destination = delivery.destination
        session.commit()
    if failed:
        log.warning("delivery %s failed: %s", claim.delivery_id, failed)
        # Once per delivery, when it reaches the dead-letter state. The error text is Relay's
        # or the vendor's message, which never carries payload values.
        report(f"delivery to {destination} failed: {failed}", tags={"destination": destination},
               extras={"delivery_id": claim.delivery_id})
    return status


def _lost(claim: Claim) -> str:
    # Another run holds the delivery now (this one's lease ran out): its outcome is the one.
    log.warning("delivery %s: its lease was taken over; this run's outcome is dropped", claim.delivery_id)
    return "skipped"


def _locked(session, claim: Claim) -> Delivery | None:
    """The delivery if this run still holds it, with its event row locked: two deliveries of
    one event finishing at once must not both miss the other's result when rolling up."""
    event_id = session.scalar(sa.select(Delivery.event_id).where(Delivery.id == claim.delivery_id))
    session.scalar(sa.select(Event).where(Event.id == event_id).with_for_update())
    delivery = session.get(Delivery, claim.delivery_id, populate_existing=True)
    return delivery if claim.holds(delivery) else None


def _roll_up(event: Event) -> None:
    statuses = {d.status for d in event.deliveries}
    if statuses <= set(DeliveryStatus.TERMINAL):
        event.status = EventStatus.FAILED if DeliveryStatus.FAILED in statuses else EventStatus.DONE
