"""The dispatcher: publishes the deliveries the web stored. A step of every Celery worker.

The web only stores (one statement per webhook) and answers; a new delivery is pending with no
`enqueued_at`. Each worker's main process runs this step's thread, which claims such rows that
are due every DISPATCH_EVERY_S while there is work (backing off to MAX_IDLE_WAIT_S when there is none),
records that they are enqueued and publishes deliver(id) for them on their lane's queue.
Several workers take different rows (PostgreSQL's FOR UPDATE SKIP LOCKED); a second publish of
one delivery would be harmless anyway: only one run can claim it.

Why not publish from the web, after its commit: two Celery messages and the second transaction
that recorded them took half of a webhook's time (bench/ingest). Deliveries that wait (a
deferral, a retry's backoff) come back through here when due, as do those handed back by a
stopping worker and those whose lease the sweep released.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa
from celery import Celery, bootsteps

from relay.db import Database
from relay.models import CURRENT_HOLD, OUTSTANDING, Delivery, DeliveryStatus, DestinationHold, utcnow
from relay.queue import mark_enqueued, publish, queue_for
from relay.runtime import Runtime
from workers.sweep import recover_from_lost_broker

log = logging.getLogger("relay.dispatch")

DISPATCH_EVERY_S = 0.05
MAX_IDLE_WAIT_S = 0.1
WAIT_AFTER_ERROR_S = 1.0
BATCH_SIZE = 200
# The most deliveries of one destination and lane out at once: published and not finished, or
# holding a throttle slot. A backlog stays in the store, not in the broker: published beyond
# what the vendor's window takes, each delivery would only be claimed to be deferred (a claim,
# a deferral and a slot reserved minutes ahead, for every delivery of the backlog at once).
MAX_OUT_PER_DESTINATION_LANE = 200


def dispatch(db: Database, celery_app: Celery, batch: int = BATCH_SIZE, connection=None) -> int:
    """Publish up to `batch` stored deliveries of `db` nobody enqueued, through `celery_app`;
    return how many were.

    The rows are marked first, in a transaction of their own, so no lock is held while
    publishing (a delivery's claim would wait for it); those the broker then refuses are
    unmarked, and a dispatcher that dies in between leaves them to the sweep (overdue).
    A delivery holding a throttle slot always goes (it is counted already); others only while
    their destination and lane have fewer than MAX_OUT_PER_DESTINATION_LANE out (a soft bound:
    the dispatchers of several workers may fill the same places in one round). A held
    destination's deliveries wait in the store (operations.destinations): none is published."""
    now = utcnow()
    with db.session() as session:
        held = list(session.scalars(sa.select(DestinationHold.destination).where(CURRENT_HOLD)))
        places_left = _places_left(session)
        full_lanes = [key for key, places in places_left.items() if places <= 0]
        holds_slot = Delivery.throttle_slot.is_not(None)
        rows = session.execute(
            sa.select(Delivery.id, Delivery.lane, Delivery.destination, holds_slot)
            .where(
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.enqueued_at.is_(None),
                Delivery.next_attempt_at <= now,
                Delivery.destination.not_in(held) if held else sa.true(),
                sa.or_(
                    holds_slot,
                    sa.tuple_(Delivery.destination, Delivery.lane).not_in(full_lanes) if full_lanes else sa.true(),
                ),
            )
            .order_by(Delivery.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).all()
        chosen = []
        for delivery_id, lane, destination, has_slot in rows:
            if not has_slot:
                places = places_left.get((destination, lane), MAX_OUT_PER_DESTINATION_LANE)
                if places <= 0:
                    continue
                places_left[(destination, lane)] = places - 1
            chosen.append((delivery_id, lane))
        mark_enqueued(session, [delivery_id for delivery_id, _ in chosen])
        session.commit()
    refused = []
    for queue in sorted({queue_for(lane) for _, lane in chosen}):
        ids = [delivery_id for delivery_id, lane in chosen if queue_for(lane) == queue]
        published = publish(celery_app, ids, queue=queue, connection=connection)
        refused += ids[len(published) :]
    if refused:
        with db.session() as session:
            session.execute(
                sa.update(Delivery)
                .where(Delivery.id.in_(refused), Delivery.status == DeliveryStatus.PENDING)
                .values(enqueued_at=None)
            )
            session.commit()
    return len(chosen) - len(refused)


def _places_left(session) -> dict[tuple[str, str], int]:
    """How many more deliveries each (destination, lane) that has any out may have out."""
    out = session.execute(
        sa.select(Delivery.destination, Delivery.lane, sa.func.count())
        .where(OUTSTANDING)
        .group_by(Delivery.destination, Delivery.lane)
    )
    return {(destination, lane): MAX_OUT_PER_DESTINATION_LANE - count for destination, lane, count in out}


class Dispatcher(bootsteps.StartStopStep):
    """The worker's step: StartStopStep starts its `DispatchThread` with the worker and stops it
    on every way out (warm or cold shutdown). It starts after the pool, so the first pool
    processes fork before the thread exists."""

    requires = ("celery.worker.components:Pool",)

    def create(self, worker):
        return DispatchThread(worker.app.runtime, worker.app)


class DispatchThread:
    """Runs `dispatch` in a thread of the worker's main process."""

    def __init__(self, runtime: Runtime, celery_app: Celery) -> None:
        self._runtime, self._celery_app = runtime, celery_app
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="relay-dispatch")
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        # A broker connection of this thread's own: kombu's Redis connections are not safe to
        # share with the consumer's thread (seen here: publishes stalled for socket_timeout).
        try:
            recover_from_lost_broker(self._runtime)  # before anything is published into this Redis
        except Exception as exc:  # the store or Redis away: the sweep looks again
            log.warning("the broker check at start failed (%s)", type(exc).__name__)
        with self._celery_app.connection_for_write() as connection:
            wait = DISPATCH_EVERY_S
            while not self._stopping.wait(wait):
                try:
                    found = dispatch(self._runtime.db, self._celery_app, connection=connection)
                except Exception as exc:  # the store or the broker away: the next round retries
                    log.warning("dispatch failed (%s)", type(exc).__name__)
                    wait = WAIT_AFTER_ERROR_S
                    continue
                wait = DISPATCH_EVERY_S if found else min(wait * 2, MAX_IDLE_WAIT_S)
