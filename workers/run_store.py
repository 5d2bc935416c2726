"""A run's reads and writes in the store: workers.engine decides, this module states them, as
Core statements built once per process and run on the one connection a run holds, taken from
the runs' own pool, which skips the pre-ping (relay.db.run_engine: the claim, a run's first
statement, tries again on a new connection if PostgreSQL dropped the pooled one). The claim and
the end each commit at once; the run's saves (progress, the identity map) wait for its next
write (`later`, workers.context says why that keeps what it must).

On PostgreSQL the runs' pool is autocommit: a statement alone is its own transaction, without a
BEGIN and a COMMIT round trip each, and writes that must go together open one (`_begin`). The
claim (with the event's move to processing and the read of its payload) is one statement there,
and so is a success's end (the delivery, its attempt row and the event's roll-up), after the
statement that locks the event: a Sprig delivery takes 10 round trips instead of 22.

Why not the ORM session the rest of Relay uses: per statement, a session's checkout (with its
pre-ping round trip), its identity map and unit of work and a statement built anew cost about
0.9 ms of CPU, against about 0.24 ms for a statement built once, run on a held connection
(BENCHMARKS.md, issue 20); a Sprig delivery made eight of them, most of a worker's CPU per
delivery.

JSON columns: Core sends a Python None as JSON null, so an SQL NULL is written as `sa.null()`
(what the ORM wrote, and what `throttle_slot IS NULL` and the like look for).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError

from relay.models import (
    BACKLOG,
    CURRENT_HOLD,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    DestinationHold,
    Event,
    EventStatus,
    EventSubject,
    JSONType,
    utcnow,
)
from workers.lease import LEASE, Claim

T = TypeVar("T")

TABLES = Delivery.metadata.tables
DELIVERIES, EVENTS, ATTEMPTS = (
    TABLES[Delivery.__tablename__],
    TABLES[Event.__tablename__],
    TABLES[DeliveryAttempt.__tablename__],
)
SUBJECTS, HOLDS = TABLES[EventSubject.__tablename__], TABLES[DestinationHold.__tablename__]
D, E = DELIVERIES.c, EVENTS.c

HELD = sa.exists().where(HOLDS.c.destination == D.destination, CURRENT_HOLD)
HOLDS_IT = (
    D.id == sa.bindparam("delivery_id"),
    D.status == DeliveryStatus.IN_FLIGHT,
    D.attempts == sa.bindparam("attempt"),
)

CLAIMED_COLUMNS = (
    D.id,
    D.event_id,
    D.destination,
    D.lane,
    D.attempts,
    D.deferrals,
    D.progress,
    D.step_times,
    D.throttle_slot,
)
CLAIM = (
    sa.update(DELIVERIES)
    .where(
        D.id == sa.bindparam("delivery_id"),
        D.status == DeliveryStatus.PENDING,
        D.next_attempt_at <= sa.bindparam("due_by"),
        ~HELD,
    )
    .values(
        status=DeliveryStatus.IN_FLIGHT,
        attempts=D.attempts + 1,
        lease_expires_at=sa.bindparam("lease_until"),
        updated_at=sa.bindparam("now"),
    )
    .returning(*CLAIMED_COLUMNS)
)
# What a run reads of its event: the payload as stored (sealed or not), opened after the claim
# commits, so that a payload this process cannot open does not undo the claim (workers.engine).
EVENT_COLUMNS = (E.type, E.received_at, sa.type_coerce(E.payload, JSONType).label("stored_payload"))


def _to_processing(event_id: sa.ColumnElement) -> sa.Update:
    return (
        sa.update(EVENTS)
        .where(E.id == event_id, E.status == EventStatus.RECEIVED)
        .values(status=EventStatus.PROCESSING, updated_at=sa.bindparam("now"))
    )


_CLAIMED = CLAIM.cte("claimed")
# PostgreSQL: the claim, the event's move to processing and the read, in one statement.
CLAIM_AND_READ = (
    sa.select(_CLAIMED, *EVENT_COLUMNS)
    .join_from(_CLAIMED, EVENTS, E.id == _CLAIMED.c.event_id)
    .add_cte(_to_processing(_CLAIMED.c.event_id).cte("processing"))
)
# SQLite (no statement in a WITH may write): the same, as three.
_CLAIMED_EVENT = sa.select(D.event_id).where(D.id == sa.bindparam("delivery_id")).scalar_subquery()
PROCESSING = _to_processing(_CLAIMED_EVENT)
CLAIMED = (
    sa.select(*CLAIMED_COLUMNS, *EVENT_COLUMNS)
    .join_from(DELIVERIES, EVENTS, E.id == D.event_id)
    .where(D.id == sa.bindparam("delivery_id"))
)
HELD_NOW = sa.select(D.enqueued_at).where(D.id == sa.bindparam("delivery_id"), D.status == DeliveryStatus.PENDING, HELD)
UNPUBLISH_HELD = (
    sa.update(DELIVERIES)
    .where(D.id == sa.bindparam("delivery_id"), D.status == DeliveryStatus.PENDING, HELD)
    .values(enqueued_at=None)
)


def _turn_statement(digests_match) -> sa.Select:
    """A delivery's turn (workers.engine._turn): the unfinished deliveries before it, in the same
    statement as the check that the run still holds it."""
    earlier = (
        sa.select(sa.func.min(D.id).label("before"), sa.func.max(D.next_attempt_at).label("due_at"))
        .join_from(DELIVERIES, SUBJECTS, SUBJECTS.c.event_id == D.event_id)
        .where(
            digests_match,
            SUBJECTS.c.event_id < sa.bindparam("event_id"),
            D.destination == sa.bindparam("destination"),
            D.lane == sa.bindparam("lane"),
            BACKLOG,
        )
        .subquery()
    )
    return sa.select(sa.select(D.id).where(*HOLDS_IT).exists(), earlier.c.before, earlier.c.due_at)


def one_of(column: sa.ColumnElement, name: str, item_type: type[sa.types.TypeEngine]) -> dict[str, sa.ColumnElement]:
    """`column` is one of the list bound as `name`, per dialect: PostgreSQL takes the list as one
    array; SQLite's expanding IN renders the statement anew at each execution (which on
    PostgreSQL was a tenth of a delivery's CPU in the profile)."""
    return {
        "postgresql": column == sa.any_(sa.bindparam(name, type_=ARRAY(item_type))),
        "sqlite": column.in_(sa.bindparam(name, expanding=True)),
    }


TURN = {dialect: _turn_statement(match) for dialect, match in one_of(SUBJECTS.c.digest, "digests", sa.String).items()}
SAVE_PROGRESS = (
    sa.update(DELIVERIES).where(*HOLDS_IT).values(progress=sa.bindparam("steps"), step_times=sa.bindparam("times"))
)
# The delivery if the run still holds it, with its event locked: two deliveries of one event
# finishing at once must not both miss the other's result when rolling up.
LOCKED = (
    sa.select(D.id, D.attempts, D.deferrals, D.progress, D.last_error, D.created_at, D.replayed_at)
    .join_from(DELIVERIES, EVENTS, E.id == D.event_id)
    .where(*HOLDS_IT)
    .with_for_update(of=EVENTS)
)
FINISHED = (
    sa.update(DELIVERIES)
    .where(*HOLDS_IT)
    .values(
        status=sa.bindparam("outcome"),
        finished_at=sa.bindparam("now"),
        lease_expires_at=None,
        throttle_slot=sa.null(),
        updated_at=sa.bindparam("now"),
    )
)
_OTHERS = sa.select(D.id).where(D.event_id == sa.bindparam("event_id"))
# The event is done, or failed, once every delivery of it has ended. BACKLOG names `status`
# bare: in these subqueries of an UPDATE of events it is the deliveries' (the innermost FROM).
ROLL_UP = (
    sa.update(EVENTS)
    .where(E.id == sa.bindparam("event_id"), ~_OTHERS.where(BACKLOG).exists())
    .values(
        status=sa.case(
            (_OTHERS.where(D.status == DeliveryStatus.FAILED).exists(), EventStatus.FAILED), else_=EventStatus.DONE
        )
    )
)
ADD_ATTEMPT = sa.insert(ATTEMPTS)


@functools.lru_cache(maxsize=4)
def ended_with_attempt(attempt_fields: tuple[str, ...]) -> sa.Update:
    """PostgreSQL: a success's end in one statement (FINISHED, ADD_ATTEMPT with `attempt_fields`
    bound as attempt_<field>, ROLL_UP). Its statements share one snapshot, taken after `locked`
    locked the event: the roll-up reads the delivery's own status as it was, so it leaves the
    delivery out and counts on the end having happened (`ended`)."""
    ended = FINISHED.returning(D.id).cte("ended")
    attempt = sa.insert(ATTEMPTS).values(
        {name: sa.bindparam(f"attempt_{name}", type_=ATTEMPTS.c[name].type) for name in attempt_fields}
    )
    # Not bound as event_id: on an UPDATE, a parameter named as a column of its table is a value
    # to set, and SQLAlchemy reads it so for the deliveries in `ended` too.
    others = sa.select(D.id).where(D.event_id == sa.bindparam("ended_event_id"), D.id != sa.bindparam("delivery_id"))
    return (
        sa.update(EVENTS)
        .where(
            E.id == sa.bindparam("ended_event_id"),
            sa.exists(ended.select()),
            ~others.where(BACKLOG).exists(),
        )
        .values(
            updated_at=sa.bindparam("now"),
            status=sa.case(
                (others.where(D.status == DeliveryStatus.FAILED).exists(), EventStatus.FAILED), else_=EventStatus.DONE
            ),
        )
        .add_cte(attempt.cte("attempt"))
    )


HOLD_SPANS = sa.select(HOLDS.c.held_at, HOLDS.c.resumed_at).where(
    HOLDS.c.destination == sa.bindparam("destination"),
    HOLDS.c.held_at < sa.bindparam("until"),
    sa.or_(CURRENT_HOLD, HOLDS.c.resumed_at > sa.bindparam("since")),
)
ADD_DEFERRAL = sa.update(DELIVERIES).where(*HOLDS_IT).values(deferrals=D.deferrals + 1)


def _nullable(value):
    return sa.null() if value is None else value


class RunStore:
    """The statements of one run, on its connection (workers.engine.run_delivery holds it)."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.dialect = connection.dialect.name
        # PostgreSQL's runs' pool is autocommit (relay.db.run_engine): writes that go together
        # open their transaction (`_begin`).
        self._autocommit = getattr(connection.connection.driver_connection, "autocommit", None) is True
        # Writes that wait for the run's next one (workers.context): by what they save, the latest.
        self._later: dict[Hashable, tuple[sa.Executable, dict[str, Any]]] = {}

    def read(self, reading: Callable[[Connection], T]) -> T:
        """`reading`'s result, its transaction ended: no snapshot stays open through a call."""
        try:
            return reading(self.connection)
        finally:
            self.connection.commit()

    def later(self, what: Hashable, statement: sa.Executable, parameters: dict[str, Any]) -> None:
        """Write this with the run's next write (replacing an earlier write of `what`)."""
        self._later[what] = (statement, parameters)

    def flush(self) -> None:
        """Write what waits, now (before a vendor call)."""
        if self._later:
            if len(self._later) > 1:
                self._begin()
            self._write_later()
            self.connection.commit()

    def _begin(self) -> None:
        """Opens a transaction on an autocommit connection (elsewhere the driver opens one with
        the first statement); the connection's commit or rollback ends it."""
        dbapi = self.connection.connection.dbapi_connection
        if self._autocommit and dbapi is not None:
            dbapi.cursor().execute("BEGIN")

    def _write_later(self) -> None:
        for statement, parameters in self._later.values():
            self.connection.execute(statement, parameters)
        self._later.clear()

    def claim(self, delivery_id: int) -> tuple[Claim, Row] | None:
        """A new claim of the delivery, now in flight, and what the run reads of it and of its
        event (CLAIMED_COLUMNS, then EVENT_COLUMNS); None if it is not due, not pending or its
        destination is held."""
        now = utcnow()
        claiming = {
            "delivery_id": delivery_id,
            "due_by": now + timedelta(seconds=1),
            "lease_until": now + LEASE,
            "now": now,
        }
        try:
            claimed = self._claim(claiming)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # The runs' pool skips the pre-ping (relay.db.run_engine): a connection a PostgreSQL
            # restart broke fails here, at the run's first statement, before anything happened.
            self.connection.rollback()
            claimed = self._claim(claiming)
        if claimed is None:
            self.connection.rollback()
            return None
        self.connection.commit()
        return Claim(delivery_id, claimed.attempts), claimed

    def _claim(self, claiming: dict[str, Any]) -> Row | None:
        conn = self.connection
        if self.dialect == "postgresql":
            return conn.execute(CLAIM_AND_READ, claiming).one_or_none()
        if conn.execute(CLAIM, claiming).one_or_none() is None:
            return None
        conn.execute(PROCESSING, claiming)
        return conn.execute(CLAIMED, claiming).one()

    def returned_if_held(self, delivery_id: int) -> tuple[bool, bool]:
        """(held, unpublished now): whether the delivery waits because its destination is held,
        and whether this call took its enqueued mark off."""
        conn = self.connection
        found = conn.execute(HELD_NOW, {"delivery_id": delivery_id}).one_or_none()
        if found is None or found.enqueued_at is None:
            conn.rollback()
            return found is not None, False
        conn.execute(UNPUBLISH_HELD, {"delivery_id": delivery_id})
        conn.commit()
        return True, True

    def turn(self, claim: Claim, event_id: int, destination: str, lane: str, digests: list[str]) -> Row:
        parameters = {
            **_held_by(claim),
            "digests": digests,
            "event_id": event_id,
            "destination": destination,
            "lane": lane,
        }
        return self.read(lambda conn: conn.execute(TURN[self.dialect], parameters).one())

    def save_progress(self, claim: Claim, steps: dict, times: dict) -> None:
        # Fenced like every write of a run: a run whose lease was taken over records nothing.
        self.later("progress", SAVE_PROGRESS, {**_held_by(claim), "steps": steps, "times": times})

    def locked(self, claim: Claim) -> Row | None:
        """Opens the transaction that records the run's end: the delivery, if the run still
        holds it, with its event locked, after the writes that waited (`later`). The caller
        commits (`commit`) or, if None, writes nothing (`release`): a run that no longer holds
        the delivery (an erasure ended it) must not save what it learnt either."""
        self._begin()
        self._write_later()
        return self.connection.execute(LOCKED, _held_by(claim)).one_or_none()

    def held_s(self, destination: str, since: datetime, until: datetime) -> float:
        """How long `destination` was held between `since` and `until` (operators' holds, current
        and resumed: a few rows)."""
        spans = self.connection.execute(HOLD_SPANS, {"destination": destination, "since": since, "until": until})
        return sum(
            max((min(resumed_at or until, until) - max(held_at, since)).total_seconds(), 0.0)
            for held_at, resumed_at in spans
        )

    def finished(
        self, claim: Claim, outcome: str, event_id: int, error: dict[str, Any] | None, attempt: dict[str, Any]
    ) -> None:
        """The delivery ended (`error`: its last_error, last_status_code, last_error_trace if it
        failed), its `attempt` row added and its event rolled up; in the transaction `locked`
        opened."""
        conn, now = self.connection, utcnow()
        if error is None and self.dialect == "postgresql":
            ending = {**_held_by(claim), "outcome": outcome, "now": now, "ended_event_id": event_id}
            ending |= {f"attempt_{name}": value for name, value in attempt.items()}
            conn.execute(ended_with_attempt(tuple(attempt)), ending)
            return
        if error is None:
            conn.execute(FINISHED, {**_held_by(claim), "outcome": outcome, "now": now})
        else:
            ended = {name: _nullable(value) for name, value in error.items()}
            ended |= {"status": outcome, "finished_at": now, "lease_expires_at": None, "throttle_slot": sa.null()}
            conn.execute(sa.update(DELIVERIES).where(*HOLDS_IT).values(ended), _held_by(claim))
        conn.execute(ROLL_UP, {"event_id": event_id})
        self.add_attempt(attempt)

    def pending_again(self, claim: Claim, values: dict[str, Any]) -> None:
        """The delivery waits for another run (a retry or a deferral); in the transaction `locked`
        opened. JSON values that are None are written as SQL NULL."""
        written = {name: _nullable(value) for name, value in values.items()}
        written |= {"status": DeliveryStatus.PENDING, "lease_expires_at": None, "enqueued_at": None}
        self.connection.execute(sa.update(DELIVERIES).where(*HOLDS_IT).values(written), _held_by(claim))

    def add_deferral(self, claim: Claim) -> None:
        self.connection.execute(ADD_DEFERRAL, _held_by(claim))

    def add_attempt(self, row: dict[str, Any]) -> None:
        self.connection.execute(ADD_ATTEMPT, row)

    def commit(self) -> None:
        self.connection.commit()

    def release(self) -> None:
        self.connection.rollback()


def _held_by(claim: Claim) -> dict[str, int]:
    return {"delivery_id": claim.delivery_id, "attempt": claim.attempt}
