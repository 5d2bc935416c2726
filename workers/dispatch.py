"""The dispatcher: publishes the deliveries the web stored. A step of every Celery worker.

The web only stores (one statement per webhook) and answers; a new delivery is pending with no
`enqueued_at`. Each worker's main process runs this step's thread, which claims such rows that
are due, records that they are enqueued and publishes deliver(id) for them on their lane's queue.
Several workers take different rows (PostgreSQL's FOR UPDATE SKIP LOCKED); a second publish of
one delivery would be harmless anyway: only one run can claim it.

When it looks: on PostgreSQL, the thread LISTENs on a connection of its own for the
notification a statement that stores deliveries sends at its commit (migration 0017), and
publishes at once; a cold worker's first deliveries no longer wait for a poll. Within GATHER_S of
a round that published, what is stored waits for the next round: a burst is published in
batches. It also looks
every DISPATCH_EVERY_S while there is work and backs off to MAX_IDLE_WAIT_S while deliveries
are out (any may come back due: a deferral, a retry, a place freed in a full lane); with none
out, it sleeps until the next stored delivery is due, at most LISTENING_IDLE_WAIT_S (the safety
net for a lost notification, and for what no notification announces: a hold lifted). Without a
listening connection (SQLite, or PostgreSQL away) it polls as before: every DISPATCH_EVERY_S
while there is work, backing off to MAX_IDLE_WAIT_S when there is none.

Why not publish from the web, after its commit: two Celery messages and the second transaction
that recorded them took half of a webhook's time (bench/ingest). Deliveries that wait (a
deferral, a retry's backoff) come back through here when due, as do those handed back by a
stopping worker and those whose lease the sweep released.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import threading
import time
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from celery import Celery, bootsteps

from relay.db import Database
from relay.models import CURRENT_HOLD, OUTSTANDING, Delivery, DeliveryStatus, DestinationHold, utcnow
from relay.queue import publish, queue_for
from relay.runtime import Runtime
from workers.run_store import one_of
from workers.sweep import recover_from_lost_broker

log = logging.getLogger("relay.dispatch")

DISPATCH_EVERY_S = 0.05
# After a round that published, what is stored in the next GATHER_S waits for the round after:
# a burst of webhooks goes out in rounds of many, not in a round each (a round is a few
# statements, about as much of a worker's CPU as a delivery's publish), at most GATHER_S later.
GATHER_S = 0.02
MAX_IDLE_WAIT_S = 0.1
LISTENING_IDLE_WAIT_S = 1.0
WAIT_AFTER_ERROR_S = 1.0
# PostgreSQL's channel (migration 0017); a listening connection lost is tried again this often.
STORED_CHANNEL = "relay_deliveries_stored"
LISTEN_AGAIN_AFTER_S = 5.0
BATCH_SIZE = 200
# The most deliveries of one destination and lane out at once: published and not finished, or
# holding a throttle slot. A backlog stays in the store, not in the broker: published beyond
# what the vendor's window takes, each delivery would only be claimed to be deferred (a claim,
# a deferral and a slot reserved minutes ahead, for every delivery of the backlog at once).
MAX_OUT_PER_DESTINATION_LANE = 200


@dataclass(frozen=True)
class Round:
    """What one round published, and what it saw of the work left (for when to look again)."""

    published: int
    refused: int = 0
    more_due: bool = False  # a full batch, or due deliveries a lane's limit kept back
    any_out: bool = False  # deliveries published and not finished, or holding a throttle slot
    next_due_in_s: float | None = None  # with none out and none due: when the next stored one is


def dispatch(db: Database, celery_app: Celery, batch: int = BATCH_SIZE, connection=None) -> int:
    """Publish up to `batch` stored deliveries of `db` nobody enqueued, through `celery_app`;
    return how many were (dispatch_round, for its count)."""
    return dispatch_round(db, celery_app, batch, connection).published


def dispatch_round(db: Database, celery_app: Celery, batch: int = BATCH_SIZE, connection=None) -> Round:
    """Publish up to `batch` stored deliveries of `db` nobody enqueued, through `celery_app`.

    The rows are marked first, in a transaction of their own, so no lock is held while
    publishing (a delivery's claim would wait for it); those the broker then refuses are
    unmarked, and a dispatcher that dies in between leaves them to the sweep (overdue).
    A delivery holding a throttle slot always goes (it is counted already); others only while
    their destination and lane have fewer than MAX_OUT_PER_DESTINATION_LANE out (a soft bound:
    the dispatchers of several workers may fill the same places in one round). A held
    destination's deliveries wait in the store (operations.destinations): none is published.
    The Round also says what is left: the dispatcher's thread waits accordingly (next_wait)."""
    now = utcnow()
    with db.engine.connect() as conn:
        held = list(conn.scalars(HELD_DESTINATIONS))
        places_left = {
            (destination, lane): MAX_OUT_PER_DESTINATION_LANE - count
            for destination, lane, count in conn.execute(OUT_BY_LANE)
        }
        full_lanes = [key for key, places in places_left.items() if places <= 0]
        rows = conn.execute(_unpublished(tuple(held), tuple(full_lanes)), {"now": now, "batch": batch}).all()
        chosen = []
        for delivery_id, lane, destination, has_slot in rows:
            if not has_slot:
                places = places_left.get((destination, lane), MAX_OUT_PER_DESTINATION_LANE)
                if places <= 0:
                    continue
                places_left[(destination, lane)] = places - 1
            chosen.append((delivery_id, lane))
        if chosen:
            conn.execute(
                MARK_ENQUEUED[conn.dialect.name], {"now": now, "ids": [delivery_id for delivery_id, _ in chosen]}
            )
        conn.commit()
        more_due = len(rows) >= batch or len(chosen) < len(rows)
        any_out = bool(places_left) or bool(chosen)
        next_due_in_s = None if more_due or any_out else _next_due_in_s(conn, held, now)
    refused = []
    for queue in sorted({queue_for(lane) for _, lane in chosen}):
        ids = [delivery_id for delivery_id, lane in chosen if queue_for(lane) == queue]
        published = publish(celery_app, ids, queue=queue, connection=connection)
        refused += ids[len(published) :]
    if refused:
        with db.engine.connect() as conn:
            conn.execute(UNMARK_REFUSED[conn.dialect.name], {"ids": refused})
            conn.commit()
    return Round(len(chosen) - len(refused), len(refused), more_due, any_out, next_due_in_s)


# The round's statements, built once: a round runs every 50 ms while there is work, and building
# them anew, through an ORM session, was most of the dispatcher's CPU (issue 20's profile).
DELIVERIES = Delivery.metadata.tables[Delivery.__tablename__]
D = DELIVERIES.c
HOLDS = DestinationHold.metadata.tables[DestinationHold.__tablename__]
HELD_DESTINATIONS = sa.select(HOLDS.c.destination).where(CURRENT_HOLD)
OUT_BY_LANE = sa.select(D.destination, D.lane, sa.func.count()).where(OUTSTANDING).group_by(D.destination, D.lane)
_HOLDS_SLOT = D.throttle_slot.is_not(None)
_UNPUBLISHED_DUE = (D.status == DeliveryStatus.PENDING, D.enqueued_at.is_(None))
_IDS = one_of(D.id, "ids", sa.Integer)
MARK_ENQUEUED = {
    dialect: sa.update(DELIVERIES).where(ids).values(enqueued_at=sa.bindparam("now")) for dialect, ids in _IDS.items()
}
UNMARK_REFUSED = {
    dialect: sa.update(DELIVERIES).where(ids, D.status == DeliveryStatus.PENDING).values(enqueued_at=None)
    for dialect, ids in _IDS.items()
}


@functools.lru_cache(maxsize=64)
def _unpublished(held: tuple[str, ...], full_lanes: tuple[tuple[str, str], ...]) -> sa.Select:
    """Due deliveries nobody published, oldest first, locked (SKIP LOCKED), but for held
    destinations and full lanes; built once for each (the usual round has neither, and a backlog
    keeps a lane full for many rounds)."""
    not_held = D.destination.not_in(held) if held else sa.true()
    lane_has_room = sa.tuple_(D.destination, D.lane).not_in(full_lanes) if full_lanes else sa.true()
    return (
        sa.select(D.id, D.lane, D.destination, _HOLDS_SLOT)
        .where(
            *_UNPUBLISHED_DUE, D.next_attempt_at <= sa.bindparam("now"), not_held, sa.or_(_HOLDS_SLOT, lane_has_room)
        )
        .order_by(D.id)
        .limit(sa.bindparam("batch"))
        .with_for_update(skip_locked=True)
    )


def _next_due_in_s(conn, held: list[str], now) -> float | None:
    """Seconds until the first stored delivery nobody published (of a destination not held)
    is due; None when there is none."""
    due = conn.scalar(
        sa.select(sa.func.min(D.next_attempt_at)).where(
            *_UNPUBLISHED_DUE, D.destination.not_in(held) if held else sa.true()
        )
    )
    return None if due is None else max((due - now).total_seconds(), 0.0)


class Dispatcher(bootsteps.StartStopStep):
    """The worker's step: StartStopStep starts its `DispatchThread` with the worker and stops it
    on every way out (warm or cold shutdown). It starts after the pool and the embedded beat,
    so that they fork before the thread exists."""

    # After the pool and the embedded beat (`relay dev`'s --beat): both fork, and a process
    # forked while this thread holds a lock (logging's, a connection pool's) can hang on it.
    requires = ("celery.worker.components:Pool", "celery.worker.components:Beat")

    def create(self, worker):
        return DispatchThread(worker.app.runtime, worker.app)


class DispatchThread:
    """Runs `dispatch_round` in a thread of the worker's main process, when deliveries are stored
    (StoredListener) and when the poll says (the module's docstring)."""

    def __init__(self, runtime: Runtime, celery_app: Celery) -> None:
        self._runtime, self._celery_app = runtime, celery_app
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_up: tuple[int, int] | None = None  # a pipe: stop() writes to end a wait at once

    def start(self) -> None:
        self._wake_up = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True, name="relay-dispatch")
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._wake_up is not None:
            os.write(self._wake_up[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            if not self._thread.is_alive() and self._wake_up is not None:
                for fd in self._wake_up:
                    os.close(fd)
                self._wake_up = None

    def _run(self) -> None:
        # A broker connection of this thread's own: kombu's Redis connections are not safe to
        # share with the consumer's thread (seen here: publishes stalled for socket_timeout).
        try:
            recover_from_lost_broker(self._runtime)  # before anything is published into this Redis
        except Exception as exc:  # the store or Redis away: the sweep looks again
            log.warning("the broker check at start failed (%s)", type(exc).__name__)
        db = self._runtime.db
        listener = StoredListener(db.engine.url) if db.engine.dialect.name == "postgresql" else None
        if listener is not None:
            listener.listen()  # before the first round: nothing stored after it goes unheard
        try:
            with self._celery_app.connection_for_write() as connection:
                wait, listen = 0.0, True
                while not self._wait(wait, listener if listen else None):
                    try:
                        done = dispatch_round(db, self._celery_app, connection=connection)
                    except Exception as exc:  # the store or the broker away: the next round retries
                        log.warning("dispatch failed (%s)", type(exc).__name__)
                        wait, listen = WAIT_AFTER_ERROR_S, False
                        continue
                    # A broker refusing: the poll's pace, whatever is stored meanwhile.
                    listen = listener is not None and not done.refused and listener.listen()
                    wait = next_wait(done, wait, listen)
                    if done.published and self._stopping.wait(GATHER_S):
                        break
        finally:
            if listener is not None:
                listener.close()

    def _wait(self, seconds: float, listener: StoredListener | None) -> bool:
        """Wait `seconds`, or until deliveries are stored when `listener` listens; True when
        the worker is stopping."""
        if listener is None or not listener.listening or self._wake_up is None:
            return self._stopping.wait(seconds)
        readable, _, _ = select.select([listener.fileno(), self._wake_up[0]], [], [], seconds)
        if self._stopping.is_set():
            return True
        if readable:
            listener.take_notifications()
        return False


def next_wait(done: Round, previous_s: float, listening: bool) -> float:
    """How long to wait before the next round after `done` (the module's docstring)."""
    if done.more_due or done.published:
        return DISPATCH_EVERY_S
    if not listening or done.any_out:
        return max(DISPATCH_EVERY_S, min(previous_s * 2, MAX_IDLE_WAIT_S))
    if done.next_due_in_s is None:
        return LISTENING_IDLE_WAIT_S
    # Due and not taken: another dispatcher holds it (SKIP LOCKED); look again soon.
    return min(max(done.next_due_in_s, DISPATCH_EVERY_S), LISTENING_IDLE_WAIT_S)


class StoredListener:
    """A PostgreSQL connection of the dispatcher's own, LISTENing on STORED_CHANNEL. Lost (the
    store restarted), it is opened again at most every LISTEN_AGAIN_AFTER_S; meanwhile the
    dispatcher polls."""

    def __init__(self, url: sa.URL) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connection: psycopg.Connection | None = None
        self._next_try = 0.0

    @property
    def listening(self) -> bool:
        return self._connection is not None

    def listen(self) -> bool:
        """Listening, or listening again when it is time to try; True when listening."""
        if self._connection is not None:
            return True
        if time.monotonic() < self._next_try:
            return False
        try:
            connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            try:
                connection.execute(f"LISTEN {STORED_CHANNEL}")
            except Exception:
                connection.close()
                raise
        except Exception as exc:
            log.warning("not listening for stored deliveries, polling (%s)", type(exc).__name__)
            self._next_try = time.monotonic() + LISTEN_AGAIN_AFTER_S
            return False
        self._connection = connection
        return True

    def fileno(self) -> int:
        assert self._connection is not None
        return self._connection.fileno()

    def take_notifications(self) -> int:
        """Read what the connection received, without waiting; return how many notifications.
        A connection found broken is closed (the dispatcher polls until `listen` opens another)."""
        if self._connection is None:
            return 0
        try:
            self._connection.pgconn.consume_input()
            taken = 0
            while self._connection.pgconn.notifies() is not None:
                taken += 1
            return taken
        except Exception as exc:
            log.warning("the connection listening for stored deliveries broke (%s)", type(exc).__name__)
            self.close()
            self._next_try = time.monotonic() + LISTEN_AGAIN_AFTER_S
            return 0

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close cleanly
                self._connection.close()
            self._connection = None
