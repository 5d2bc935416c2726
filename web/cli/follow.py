"""`relay events list --follow`: new events and delivery outcomes, one line each, as they happen.

The store is polled (FOLLOW_INTERVAL_S). New events are those above the highest id seen, looking
back a little (LOOKBACK_IDS): PostgreSQL hands out ids before commit, so a slower transaction
can commit a lower id after a higher one was seen. Outcomes come from the outstanding deliveries
(pending or in flight: ix_deliveries_due), watched from poll to poll: one that leaves them has
finished, one that comes back pending with another attempt behind it will retry. Failures are
also read by their finish time (a partial index), so a replay that fails between two polls is
shown; one that succeeds between two polls is not (`relay events replay --wait` watches those).
A line holds ids, types, statuses and the stored (already scrubbed) error: no payload value.

    14:02:11  webhook  new_referral  event 12  received
    14:02:12  sprig  event 12  delivered (1 attempt)
    14:02:12  spruce  event 12  will retry at 14:02:42 (attempt 1, HTTP 503): Spruce answered 503 …
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from operations.filters import EventFilter
from relay.models import Delivery, DeliveryStatus, Event, utcnow

FOLLOW_INTERVAL_S = 1.0
LOOKBACK_IDS = 50
EVENTS_PER_POLL = 1000
# Outstanding deliveries watched at most (the newest): a backlog beyond it shows the newest.
WATCH_LIMIT = 10_000
UNFINISHED = (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)
# Failures are looked for since the last poll and this much before: a worker's clock, and a
# commit that lands after the poll that should have seen it.
FAILURE_OVERLAP_S = 5.0


@dataclass(frozen=True)
class Seen:
    """What a poll saw of an outstanding delivery."""

    status: str
    attempts: int
    deferrals: int


class Follower:
    """Remembers what it has shown; each poll() returns the lines for what changed since."""

    def __init__(self, session_scope: Callable, filters: EventFilter = EventFilter()):
        self.session_scope, self.filters = session_scope, filters
        self.seen_events: set[int] = set()
        self.failures_since = utcnow()
        self.shown_failures: dict[int, datetime] = {}  # delivery id -> finished_at, lately
        with session_scope() as session:
            self.last_event_id = session.scalar(sa.select(sa.func.max(Event.id))) or 0
            self.seen_events = set(session.scalars(self._new_events_query()))
            self.watched = self._outstanding(session)

    def poll(self) -> list[str]:
        started = utcnow()
        lines: list[tuple[datetime, str]] = []
        with self.session_scope() as session:
            for event in session.scalars(self._new_events_query(Event).options(selectinload(Event.deliveries))):
                lines.append((event.received_at, _event_line(event)))
                # A delivery already watched (it came in with the first look) is followed below.
                lines += self._news([d for d in event.deliveries if self._wanted(d) and d.id not in self.watched], {})
                self._saw_event(event.id)
            outstanding = self._outstanding(session)
            # Gone from the outstanding ones (finished, mostly), or back pending after a run.
            looked_at = [i for i in self.watched if i not in outstanding or outstanding[i] != self.watched[i]]
            lines += self._news(session.scalars(sa.select(Delivery).where(Delivery.id.in_(looked_at))), self.watched)
            lines += self._news(session.scalars(self._failures_query()), {})
        self.watched = outstanding
        self.failures_since = started
        return [line for _, line in sorted(lines, key=lambda pair: pair[0])]

    def _news(self, deliveries, before: dict[int, Seen]) -> list[tuple[datetime, str]]:
        found = []
        for delivery in deliveries:
            if delivery.status == DeliveryStatus.FAILED:
                if self.shown_failures.get(delivery.id) == delivery.finished_at:
                    continue
                self.shown_failures[delivery.id] = delivery.finished_at
            if news := _news_of(delivery, before.get(delivery.id)):
                found.append(news)
        return found

    def _failures_query(self) -> sa.Select:
        """Failures since the last poll, whether or not a poll saw them outstanding (a replay
        that failed within the second): few rows, read through ix_deliveries_failed_finished."""
        since = self.failures_since - timedelta(seconds=FAILURE_OVERLAP_S)
        self.shown_failures = {i: at for i, at in self.shown_failures.items() if at and at >= since}
        query = sa.select(Delivery).where(sa.text("status = 'failed'"), Delivery.finished_at >= since)
        return self._narrowed(query).order_by(Delivery.id)

    def _new_events_query(self, what=Event.id) -> sa.Select:
        query = self.filters.apply(sa.select(what)).where(Event.id > self.last_event_id - LOOKBACK_IDS)
        if self.seen_events:
            query = query.where(Event.id.not_in(self.seen_events))
        return query.order_by(Event.id).limit(EVENTS_PER_POLL)

    def _saw_event(self, event_id: int) -> None:
        self.seen_events.add(event_id)
        self.last_event_id = max(self.last_event_id, event_id)
        self.seen_events = {i for i in self.seen_events if i > self.last_event_id - LOOKBACK_IDS}

    def _wanted(self, delivery: Delivery) -> bool:
        return self.filters.destination in (None, delivery.destination)

    def _narrowed(self, query: sa.Select) -> sa.Select:
        if self.filters.destination:
            query = query.where(Delivery.destination == self.filters.destination)
        if self.filters.types:
            query = query.where(Delivery.event_id.in_(sa.select(Event.id).where(Event.type.in_(self.filters.types))))
        return query

    def _outstanding(self, session) -> dict[int, Seen]:
        query = self._narrowed(
            sa.select(Delivery.id, Delivery.status, Delivery.attempts, Delivery.deferrals).where(
                Delivery.status.in_(UNFINISHED)
            )
        )
        rows = session.execute(query.order_by(Delivery.id.desc()).limit(WATCH_LIMIT))
        return {row.id: Seen(row.status, row.attempts, row.deferrals) for row in rows}


def follow(
    follower: Follower,
    emit: Callable[[str], None],
    should_stop: Callable[[], bool] = lambda: False,
    interval_s: float = FOLLOW_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll every `interval_s` and emit each line until should_stop() (checked before each wait):
    by default until Ctrl-C, as `relay events list --follow` does. Code that must end on its own
    (the tests) passes should_stop, e.g. stop_after(polls)."""
    while not should_stop():
        sleep(interval_s)
        for line in follower.poll():
            emit(line)


def stop_after(polls: int | None) -> Callable[[], bool]:
    """should_stop for follow(): once `polls` polls have run (None: never)."""
    if polls is None:
        return lambda: False
    checks = itertools.count()
    return lambda: next(checks) >= polls


def _news_of(delivery: Delivery, before: Seen | None) -> tuple[datetime, str] | None:
    """The line for what became of a delivery since `before` (None: first seen), if anything."""
    if delivery.status in DeliveryStatus.TERMINAL:
        return delivery.finished_at or delivery.updated_at, _line(delivery, _finished(delivery))
    ran = delivery.attempts > (before.attempts if before else 0) or (
        before is not None and before.status == DeliveryStatus.IN_FLIGHT
    )
    if delivery.status != DeliveryStatus.PENDING or not ran:
        return None  # running, or waiting for its first run
    deferred = delivery.deferrals > (before.deferrals if before else 0)
    when = f"{'deferred until' if deferred else 'will retry at'} {_clock(delivery.next_attempt_at)}"
    code = f", HTTP {delivery.last_status_code}" if delivery.last_status_code else ""
    return delivery.updated_at, _line(delivery, f"{when} (attempt {delivery.attempts}{code}){_error(delivery)}")


def _finished(delivery: Delivery) -> str:
    attempts = f"{delivery.attempts} attempt{'' if delivery.attempts == 1 else 's'}"
    if delivery.status == DeliveryStatus.SUCCEEDED:
        return f"delivered ({attempts})"
    if delivery.status == DeliveryStatus.SUPERSEDED:
        return f"superseded: newer values were already sent ({attempts})"
    code = f", HTTP {delivery.last_status_code}" if delivery.last_status_code else ""
    return f"failed ({attempts}{code}){_error(delivery)}"


def _event_line(event: Event) -> str:
    return f"{_clock(event.received_at)}  {event.source}  {event.type}  event {event.id}  {event.status}"


def _line(delivery: Delivery, what: str) -> str:
    at = delivery.finished_at if delivery.status in DeliveryStatus.TERMINAL else delivery.updated_at
    return f"{_clock(at)}  {delivery.destination}  event {delivery.event_id}  {what}"


def _error(delivery: Delivery) -> str:
    return f": {delivery.last_error}" if delivery.last_error else ""


def _clock(moment: datetime | None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%H:%M:%S")
