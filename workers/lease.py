"""A delivery's lease, kept alive while its run works.

A claimed delivery is `in_flight` until its lease runs out; the sweep then gives it to another
worker. The lease is short, so that the work of a worker that died (SIGKILL, OOM, a machine
gone) comes back within seconds, and a thread renews it, and the subscriber locks the run
holds, for as long as the run goes on. Each claim is numbered (the delivery's attempt count):
renewals and outcomes of a run whose lease was taken from it change nothing.

Hand-written: a daemon thread and one UPDATE; Celery has no lease of its own for Redis (a
killed worker's message comes back only after the visibility timeout, an hour here).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import redis
import sqlalchemy as sa

from relay.db import Database
from relay.models import Delivery, DeliveryStatus, utcnow
from relay.runtime import Runtime

log = logging.getLogger("relay.delivery")

LEASE = timedelta(seconds=20)
RENEW_EVERY_S = 5.0


@dataclass(frozen=True)
class Claim:
    """One run's hold on a delivery: the attempt it claimed."""

    delivery_id: int
    attempt: int

    def holds(self, delivery: Delivery) -> bool:
        return delivery.status == DeliveryStatus.IN_FLIGHT and delivery.attempts == self.attempt

    def where(self):
        """The SQL condition that this run still holds the delivery."""
        return sa.and_(
            Delivery.id == self.delivery_id,
            Delivery.status == DeliveryStatus.IN_FLIGHT,
            Delivery.attempts == self.attempt,
        )


def renew(claim: Claim, db: Database) -> bool:
    with db.session() as session:
        renewed = session.execute(
            sa.update(Delivery).where(claim.where()).values(lease_expires_at=utcnow() + LEASE)
        ).rowcount
        session.commit()
    return bool(renewed)


@contextmanager
def kept_alive(claim: Claim, locks: list[redis.lock.Lock], db: Database):
    """Renew the lease (in `db`) and `locks` every few seconds until the block ends."""
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(RENEW_EVERY_S):
            try:
                if not renew(claim, db):
                    log.warning(
                        "delivery %s: its lease was taken over; this run's outcome will not count", claim.delivery_id
                    )
                    return
                for lock in locks:
                    lock.reacquire()
            except Exception as exc:  # the store or Redis is away: try again at the next tick
                log.warning("delivery %s: lease not renewed (%s)", claim.delivery_id, type(exc).__name__)

    keeper = threading.Thread(target=keep, name=f"lease-{claim.delivery_id}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join(timeout=RENEW_EVERY_S * 2)


def hand_back(claim: Claim, db: Database) -> None:
    """Put a delivery this run will not finish back to pending at once, as a deferral (no
    retry budget spent), for the sweep to enqueue: no one waits for its lease."""
    with db.session() as session:
        session.execute(
            sa.update(Delivery)
            .where(claim.where())
            .values(
                status=DeliveryStatus.PENDING,
                lease_expires_at=None,
                enqueued_at=None,
                next_attempt_at=utcnow(),
                deferrals=Delivery.deferrals + 1,
            )
        )
        session.commit()


@contextmanager
def handed_back_if_stopped(claim: Claim, runtime: Runtime):
    """While the block runs, the claim is among the runtime's running ones; if the worker stops
    it (a warm shutdown that ran out of time: SystemExit or Celery's own terminate exception), it
    is handed back."""
    runtime.running.add(claim)
    try:
        yield
    except BaseException as stop:
        if not isinstance(stop, Exception):
            hand_back_quietly(claim, runtime.db)
        raise
    finally:
        runtime.running.discard(claim)


def hand_back_all(runtime: Runtime) -> None:
    """For the worker's shutdown: hand back whatever this process is still running."""
    for claim in list(runtime.running):
        hand_back_quietly(claim, runtime.db)


def hand_back_quietly(claim: Claim, db: Database) -> None:
    try:
        hand_back(claim, db)
        log.info(
            "delivery %s handed back: the worker is stopping",
            claim.delivery_id,
            extra={"delivery_id": claim.delivery_id, "outcome": "handed_back"},
        )
    except Exception as exc:  # the lease will bring it back instead
        log.warning("delivery %s not handed back (%s)", claim.delivery_id, type(exc).__name__)
