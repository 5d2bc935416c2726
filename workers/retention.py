"""Retention: delete finished events (and their deliveries) once they are old enough.

One implementation for both ways it runs: `relay events purge` (by hand, or `--retention`), and
beat's daily task (relay.queue.RETENTION_TASK, unless RELAY_RETENTION_PURGE=off), so that a
deploy nobody scheduled a job for still keeps personal data no longer than RELAY_RETENTION and
RELAY_RETENTION_FAILED say.

Events are deleted in batches of PURGE_BATCH, each committed on its own: an interrupted run
(a deploy's SIGTERM) leaves whatever it did done, and the next run carries on. Beat's run stops
after RUN_BUDGET_S and says whether anything is left (the task then publishes another run), so
it never holds a worker slot long; a lock in Redis keeps two runs from deleting side by side.
Each retention run records how it ended in Redis (LAST_RUN), for `relay doctor`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import cast

import redis
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from relay.config import Config
from relay.db import Database
from relay.models import Delivery, Event, EventStatus, utcnow
from relay.runtime import Runtime

log = logging.getLogger("relay.retention")

TERMINAL_EVENTS = (EventStatus.DONE, EventStatus.FAILED, EventStatus.INVALID, EventStatus.UNHANDLED)
KEPT_LONGER = (EventStatus.FAILED, EventStatus.INVALID)
PURGE_BATCH = 1000
# A batch takes about 60 ms with a million events stored (BENCHMARKS.md): a run of a minute
# deletes some hundreds of thousands, and a longer backlog goes on in the next run.
RUN_BUDGET_S = 60.0
# How a retention run ended (JSON), and the lock one run holds while it deletes.
LAST_RUN = "relay:retention:last_run"
RUNNING = "relay:retention:running"


@dataclass(frozen=True)
class Ages:
    """How old a finished event must be to go: `finished_s`, and `failed_s` for failed and
    invalid events (kept longer, to be looked at)."""

    finished_s: float
    failed_s: float

    @classmethod
    def configured(cls, config: Config) -> Ages:
        return cls(config.retention_s, max(config.retention_s, config.retention_failed_s))

    def conditions(self, now: datetime) -> list[sa.ColumnElement[bool]]:
        return purge_conditions(now, self.finished_s, self.failed_s)


@dataclass(frozen=True)
class RunResult:
    purged: int
    complete: bool  # False: stopped at its time budget with events left to purge
    duration_s: float


def purge_conditions(now: datetime, age: float, failed_age: float) -> list[sa.ColumnElement[bool]]:
    """The finished events a purge deletes, in two parts that no event meets both of (their
    statuses differ): received more than `age` seconds before `now`, and failed and invalid
    ones more than `failed_age`."""
    return [
        sa.and_(
            Event.status.in_([s for s in TERMINAL_EVENTS if s not in KEPT_LONGER]),
            Event.received_at < now - timedelta(seconds=age),
        ),
        sa.and_(Event.status.in_(KEPT_LONGER), Event.received_at < now - timedelta(seconds=failed_age)),
    ]


def purge_count(session: Session, conditions: list[sa.ColumnElement[bool]]) -> int:
    """How many events meet any of the (disjoint) conditions: one count each, added up, so each
    reads a range of ix_events_received_status_type alone (an OR of them reads every entry)."""
    counts = [sa.select(sa.func.count()).select_from(Event).where(c).scalar_subquery() for c in conditions]
    return sum(session.execute(sa.select(*counts)).one())


def purge_batch(session: Session, condition: sa.ColumnElement[bool]) -> list[int]:
    """The ids of the next PURGE_BATCH events to purge."""
    return list(session.scalars(sa.select(Event.id).where(condition).limit(PURGE_BATCH)))


def delete_events(session: Session, event_ids: list[int]) -> int:
    """Delete these events and their deliveries (their subjects and attempts go by ON DELETE CASCADE)."""
    session.execute(sa.delete(Delivery).where(Delivery.event_id.in_(event_ids)))
    deleted = cast(CursorResult, session.execute(sa.delete(Event).where(Event.id.in_(event_ids))))  # a DML result
    return deleted.rowcount


def purge(ages: Ages, *, db: Database, now: datetime | None = None, budget_s: float | None = None) -> RunResult:
    """Delete what `ages` allow from `db`, batch by batch, each committed; with `budget_s`, start
    no new batch once that long has passed (a run deletes one batch at least)."""
    condition = sa.or_(*ages.conditions(now or utcnow()))
    started = time.monotonic()
    purged = 0
    while True:
        with db.session() as session:
            batch = purge_batch(session, condition)
            if not batch:
                return RunResult(purged, complete=True, duration_s=time.monotonic() - started)
            purged += delete_events(session, batch)
            session.commit()
        if budget_s is not None and time.monotonic() - started >= budget_s:
            return RunResult(purged, complete=False, duration_s=time.monotonic() - started)


def run_retention(runtime: Runtime, *, budget_s: float | None = None, by: str = "beat") -> RunResult | None:
    """Beat's daily retention run: purge what RELAY_RETENTION and RELAY_RETENTION_FAILED allow,
    for at most `budget_s` (RUN_BUDGET_S), and record how it ended. None when another run holds
    the lock."""
    budget_s = RUN_BUDGET_S if budget_s is None else budget_s
    config = runtime.config
    lock = runtime.redis.lock(RUNNING, timeout=budget_s + 60, blocking=False)
    if not lock.acquire():
        log.info("retention: another run is under way; this one does nothing")
        return None
    try:
        result = purge(Ages.configured(config), db=runtime.db, budget_s=budget_s)
    except Exception as exc:
        record_run(runtime.redis, by=by, error=type(exc).__name__)
        raise
    finally:
        with contextlib.suppress(redis.exceptions.LockError):  # it ran out first: nothing of ours to release
            lock.release()
    record_run(runtime.redis, by=by, result=result)
    log.info(
        "retention: purged %s events in %.1f s%s",
        result.purged,
        result.duration_s,
        "" if result.complete else "; more are left, another run follows",
    )
    return result


def record_run(client: redis.Redis, *, by: str, result: RunResult | None = None, error: str | None = None) -> None:
    """How a retention run ended, for `relay doctor` (best effort: the purge itself is done)."""
    record = {"finished_at": time.time(), "by": by, "error": error}
    if result is not None:
        record |= asdict(result)
    try:
        client.set(LAST_RUN, json.dumps(record))
    except redis.RedisError as exc:
        log.warning("retention: its last run could not be recorded in Redis (%s)", type(exc).__name__)


def last_run(client: redis.Redis) -> dict | None:
    """The last recorded retention run (in `client`, the shared Redis), or None. Raises redis.RedisError."""
    raw = cast("bytes | None", client.get(LAST_RUN))  # redis-py types async results too
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("finished_at"), (int, float)) else None
