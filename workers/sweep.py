"""The periodic sweep (run by beat every 10 s): recover work the broker does not hold.

- deliveries whose lease expired (their worker died, or lost the store, mid-run) go back to
  pending, at once;
- pending deliveries due for more than OVERDUE and not enqueued within it are presumed lost
  (a dispatcher that died between marking and publishing, a worker killed with messages it had
  reserved) and enqueued again; the dispatcher (workers.dispatch) publishes everything else. A
  delivery enqueued long ago is presumed lost only while the queues are short (at most
  BACKLOG messages): in a backlog it is only waiting its turn, and sending it again would add
  a duplicate message per sweep to the backlog, each a claim that finds nothing to do;
- when Redis has lost its data (restarted empty: the marker the sweep keeps there is gone), no
  message can be trusted, so every pending delivery is enqueued again as soon as it is due.
A duplicate message is harmless: only one worker can claim a pending delivery.
"""
from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta

import redis
import sqlalchemy as sa

from relay.config import Config
from relay.db import session_scope
from relay.models import Delivery, DeliveryStatus, Lane, utcnow
from relay.observability import check_in
from relay.queue import CATCH_UP_QUEUE, LIVE_QUEUE, enqueue_deliveries
from relay.shared_redis import redis_client

log = logging.getLogger("relay.sweep")

OVERDUE = timedelta(seconds=20)
BATCH = 500
BACKLOG = 100
# Present while Redis keeps its data; a restart without persistence (or a flush) removes it.
BROKER_MARKER = "relay:broker:alive"
# Set by the sweep that checked in with Sentry; its expiry spaces the check-ins.
CHECKED_IN = "relay:sweep:checked_in"
CHECK_IN_EVERY_S = 55


def sweep_and_check_in(config: Config) -> dict[str, int]:
    """The sweep as beat runs it: a Sentry cron check-in (at most once a minute, whichever
    process sweeps) says it ran, so a stopped beat pages someone."""
    started = time.monotonic()
    try:
        result = sweep(config)
    except Exception:
        check_in(ok=False, duration_s=time.monotonic() - started)
        raise
    if _check_in_due(config):
        check_in(ok=True, duration_s=time.monotonic() - started)
    return result


def sweep(config: Config, now=None) -> dict[str, int]:
    now = now or utcnow()
    forgotten = _broker_forgot(config)
    with session_scope() as session:
        released = session.execute(release_expired_leases(now)).rowcount
        if forgotten:
            session.execute(forget_enqueued())
        session.commit()
        due = session.execute(due_deliveries(now, backlogged=_backlogged(config))).all()
    live = [delivery_id for delivery_id, lane in due if lane != Lane.CATCH_UP]
    catch_up = [delivery_id for delivery_id, lane in due if lane == Lane.CATCH_UP]
    enqueued = enqueue_deliveries(live) + enqueue_deliveries(catch_up, queue=CATCH_UP_QUEUE)
    return {"released": released, "enqueued": enqueued, "broker_forgot": int(forgotten)}


def release_expired_leases(now) -> sa.Update:
    """In-flight deliveries whose lease expired go back to pending, due at once."""
    return (sa.update(Delivery)
            .where(Delivery.status == DeliveryStatus.IN_FLIGHT, Delivery.lease_expires_at < now)
            .values(status=DeliveryStatus.PENDING, lease_expires_at=None, next_attempt_at=now,
                    enqueued_at=None, last_error="worker lost during the attempt (lease expired)"))


def forget_enqueued() -> sa.Update:
    """After the broker lost its data: no pending delivery counts as enqueued any more."""
    return sa.update(Delivery).where(Delivery.status == DeliveryStatus.PENDING).values(enqueued_at=None)


def due_deliveries(now, backlogged: bool = False) -> sa.Select:
    """(id, lane) of up to BATCH pending deliveries that are due and not enqueued, or (unless
    the queues are `backlogged`) enqueued more than OVERDUE ago while due as long: the ones the
    sweep enqueues, longest due first."""
    lost = Delivery.enqueued_at.is_(None)
    if not backlogged:
        lost = sa.or_(lost, sa.and_(Delivery.next_attempt_at <= now - OVERDUE, Delivery.enqueued_at <= now - OVERDUE))
    return (sa.select(Delivery.id, Delivery.lane)
            .where(Delivery.status == DeliveryStatus.PENDING, lost, Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at)
            .limit(BATCH))


def _backlogged(config: Config) -> bool:
    try:
        client = redis_client(config.redis_url)
        return client.llen(LIVE_QUEUE) + client.llen(CATCH_UP_QUEUE) > BACKLOG
    except redis.RedisError:
        return True  # nothing can be enqueued now anyway


def _check_in_due(config: Config) -> bool:
    try:
        return bool(redis_client(config.redis_url).set(CHECKED_IN, "1", nx=True, ex=CHECK_IN_EVERY_S))
    except redis.RedisError:
        return True  # better one check-in too many than a page for a beat that runs


def _broker_forgot(config: Config) -> bool:
    """True once after Redis lost its data (and on the very first sweep, which costs nothing)."""
    try:
        forgot = bool(redis_client(config.redis_url).set(BROKER_MARKER, secrets.token_hex(8), nx=True))
    except redis.RedisError as exc:  # the broker is away: nothing to enqueue into either
        log.warning("sweep: broker unreachable (%s)", type(exc).__name__)
        return False
    if forgot:
        log.warning("sweep: the broker holds none of Relay's marker: every pending delivery is enqueued again")
    return forgot
