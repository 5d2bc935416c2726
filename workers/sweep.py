"""The periodic sweep (run by beat every 10 s): recover work the broker does not hold.

The sweep publishes nothing itself: it hands deliveries back to the dispatcher
(workers.dispatch) by clearing `enqueued_at`, so every publish goes through the dispatcher's
limit of deliveries out per destination.
- deliveries whose lease expired (their worker died, or lost the store, mid-run) go back to
  pending, at once;
- pending deliveries due for more than OVERDUE and enqueued as long ago are presumed lost (a
  dispatcher that died between marking and publishing, a worker killed with messages it had
  reserved) and handed back. Only while the queues are short (at most BACKLOG messages): in a
  backlog such a delivery is only waiting its turn, and sending it again would add a duplicate
  message per sweep, each a claim that finds nothing to do;
- when Redis has lost its data (restarted empty: the marker the sweep keeps there is gone), no
  message can be trusted, so every pending delivery that counted as enqueued is handed back.
  A worker looks first, as it starts and before its dispatcher publishes
  (`recover_from_lost_broker`): the first sweep comes 10 s later, and would take what that
  dispatcher had just enqueued into the new Redis for lost.
A duplicate message is harmless: only one worker can claim a pending delivery.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from datetime import timedelta
from typing import cast

import redis
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from relay.models import CURRENT_HOLD, Delivery, DeliveryStatus, DestinationHold, utcnow
from relay.observability import check_in
from relay.queue import CATCH_UP_QUEUE, LIVE_QUEUE
from relay.runtime import Runtime

log = logging.getLogger("relay.sweep")

OVERDUE = timedelta(seconds=20)
BACKLOG = 100
# Present while Redis keeps its data; a restart without persistence (or a flush) removes it.
BROKER_MARKER = "relay:broker:alive"
# Set by the sweep that checked in with Sentry; its expiry spaces the check-ins.
CHECKED_IN = "relay:sweep:checked_in"
CHECK_IN_EVERY_S = 55
# When a sweep beat scheduled last finished (epoch seconds): `relay doctor`'s sign that beat is alive.
LAST_SWEPT = "relay:sweep:last_finished"


def sweep_and_check_in(runtime: Runtime) -> dict[str, int]:
    """The sweep as beat runs it: a Sentry cron check-in (at most once a minute, whichever
    process sweeps) says it ran, so a stopped beat pages someone."""
    started = time.monotonic()
    try:
        result = sweep(runtime)
    except Exception:
        check_in(ok=False, duration_s=time.monotonic() - started)
        raise
    if _check_in_due(runtime.redis):
        check_in(ok=True, duration_s=time.monotonic() - started)
    _record_finished(runtime.redis)
    return result


def _record_finished(client: redis.Redis) -> None:
    with contextlib.suppress(redis.RedisError):  # the sweep's work is done; doctor will say the mark is stale
        client.set(LAST_SWEPT, f"{time.time():.3f}")


def sweep(runtime: Runtime, now=None) -> dict[str, int]:
    now = now or utcnow()
    republished = recover_from_lost_broker(runtime)
    with runtime.session() as session:
        released = _changed(session, release_expired_leases(now))
        handed_back = republished or 0
        if not _backlogged(runtime.redis):
            handed_back += _changed(session, forget_overdue(now))
        session.commit()
    return {"released": released, "handed_back": handed_back, "broker_forgot": int(republished is not None)}


def recover_from_lost_broker(runtime: Runtime) -> int | None:
    """If Redis lost its data since the last process used it (the marker is gone), every
    pending delivery that counted as enqueued is handed back: how many, or None when the marker
    was there. Each sweep does it, and each worker as it starts."""
    if not _broker_forgot(runtime.redis):
        return None
    with runtime.session() as session:
        republished = _changed(session, forget_enqueued())
        session.commit()
    _report_forgotten(republished)
    return republished


def _changed(session: Session, update: sa.Update) -> int:
    return cast(CursorResult, session.execute(update)).rowcount  # an UPDATE's result


def _report_forgotten(republished: int) -> None:
    # A warning only when messages may really have been lost: a Redis that starts empty (every
    # first start, every `relay dev`) with nothing enqueued has nothing to tell an operator.
    if republished:
        log.warning(
            "sweep: the broker lost its data (Relay's marker is gone): %d pending %s handed back to be published again",
            republished,
            "delivery" if republished == 1 else "deliveries",
            extra={"handed_back": republished},
        )
    else:
        log.info("sweep: Relay's marker set in the broker (it was empty); no pending delivery was enqueued")


def release_expired_leases(now) -> sa.Update:
    """In-flight deliveries whose lease expired go back to pending, due at once."""
    return (
        sa.update(Delivery)
        .where(Delivery.status == DeliveryStatus.IN_FLIGHT, Delivery.lease_expires_at < now)
        .values(
            status=DeliveryStatus.PENDING,
            lease_expires_at=None,
            next_attempt_at=now,
            enqueued_at=None,
            last_error="worker lost during the attempt (lease expired)",
        )
    )


def forget_enqueued() -> sa.Update:
    """After the broker lost its data: no pending delivery counts as enqueued any more."""
    return (
        sa.update(Delivery)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.enqueued_at.is_not(None))
        .values(enqueued_at=None)
    )


def forget_overdue(now) -> sa.Update:
    """Pending deliveries enqueued more than OVERDUE ago and due as long: presumed lost. Not those
    of a held destination: they wait on purpose (a worker that takes one returns it to the
    store, workers.engine); after the resume, one still enqueued is handed back as any other."""
    held = sa.exists().where(DestinationHold.destination == Delivery.destination, CURRENT_HOLD)
    return (
        sa.update(Delivery)
        .where(
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.enqueued_at <= now - OVERDUE,
            Delivery.next_attempt_at <= now - OVERDUE,
            ~held,
        )
        .values(enqueued_at=None)
    )


def _backlogged(client: redis.Redis) -> bool:
    try:
        # redis-py types each result as the async client's too.
        waiting = cast(int, client.llen(LIVE_QUEUE)) + cast(int, client.llen(CATCH_UP_QUEUE))
        return waiting > BACKLOG
    except redis.RedisError:
        return True  # nothing can be enqueued now anyway


def _check_in_due(client: redis.Redis) -> bool:
    try:
        return bool(client.set(CHECKED_IN, "1", nx=True, ex=CHECK_IN_EVERY_S))
    except redis.RedisError:
        return True  # better one check-in too many than a page for a beat that runs


def _broker_forgot(client: redis.Redis) -> bool:
    """True once after Redis lost its data (and on the very first sweep, which costs nothing)."""
    try:
        forgot = bool(client.set(BROKER_MARKER, secrets.token_hex(8), nx=True))
    except redis.RedisError as exc:  # the broker is away: nothing to enqueue into either
        log.warning("sweep: broker unreachable (%s)", type(exc).__name__)
        return False
    return forgot
