"""A delivery's lease, kept alive while its run works.

A claimed delivery is `in_flight` until its lease runs out; the sweep then gives it to another
worker. The lease is short, so that the work of a worker that died (SIGKILL, OOM, a machine
gone) comes back within seconds, and a thread of the process (`Keeper`) renews it, and the
subscriber locks the run holds, for as long as the run goes on. Each claim is numbered (the delivery's attempt count):
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
def kept_alive(claim: Claim, locks: list[redis.lock.Lock], runtime: Runtime):
    """Renew the lease and `locks` every few seconds until the block ends (the process's one
    `Keeper` does)."""
    keeper = runtime.shared(Keeper, lambda: Keeper(runtime.db))
    keeper.keep(claim, locks)
    try:
        yield
    finally:
        keeper.drop(claim)


class Keeper:
    """One thread per process renews the leases and locks of every run under way, every
    RENEW_EVERY_S (a run's first renewal comes within that long, well inside LEASE): a thread
    started and joined per run cost a tenth of a Sprig delivery's CPU."""

    def __init__(self, db: Database):
        self._db = db
        self._kept: dict[Claim, list[redis.lock.Lock]] = {}
        self._changing = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def keep(self, claim: Claim, locks: list[redis.lock.Lock]) -> None:
        with self._changing:
            self._kept[claim] = locks
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="relay-lease-keeper", daemon=True)
                self._thread.start()

    def drop(self, claim: Claim) -> None:
        with self._changing:
            self._kept.pop(claim, None)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=RENEW_EVERY_S * 2)

    def _run(self) -> None:
        while not self._stopping.wait(RENEW_EVERY_S):
            with self._changing:
                kept = list(self._kept.items())
            for claim, locks in kept:
                self._renew(claim, locks)

    def _renew(self, claim: Claim, locks: list[redis.lock.Lock]) -> None:
        try:
            if not renew(claim, self._db):
                if self._still_kept(claim):  # not a run that ended meanwhile
                    log.warning(
                        "delivery %s: its lease was taken over; this run's outcome will not count", claim.delivery_id
                    )
                    self.drop(claim)
                return
            for lock in locks:
                lock.reacquire()
        except Exception as exc:  # the store or Redis is away: try again at the next tick
            if self._still_kept(claim):
                log.warning("delivery %s: lease not renewed (%s)", claim.delivery_id, type(exc).__name__)

    def _still_kept(self, claim: Claim) -> bool:
        with self._changing:
            return claim in self._kept


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
