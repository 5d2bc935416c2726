"""Following the store: new events and delivery outcomes as they happen, for `relay events list
--follow` (a console could poll the same).

The store is polled. New events are those above the highest id seen, looking back a little
(LOOKBACK_IDS): PostgreSQL hands out ids before commit, so a slower transaction can commit a
lower id after a higher one was seen. Outcomes come from the outstanding deliveries (pending or
in flight: ix_deliveries_due), watched from poll to poll: one that leaves them has finished, one
that comes back pending with another attempt behind it will retry. Failures are also read by
their finish time (a partial index), so a replay that fails between two polls is seen; one that
succeeds between two polls is not (`relay events replay --wait` watches those). What a poll
returns holds ids, types, statuses and the stored (already scrubbed) error: no payload value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from operations.filters import EventFilter
from relay.models import Delivery, DeliveryStatus, Event, utcnow
from relay.runtime import Runtime

LOOKBACK_IDS = 50
EVENTS_PER_POLL = 1000
# Outstanding deliveries watched at most (the newest): a backlog beyond it shows the newest.
WATCH_LIMIT = 10_000
UNFINISHED = (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)
# Failures are looked for since the last poll and this much before: a worker's clock, and a
# commit that lands after the poll that should have seen it.
FAILURE_OVERLAP_S = 5.0


@dataclass(frozen=True)
class NewEvent:
    at: datetime  # received
    event_id: int
    source: str
    type: str
    status: str


@dataclass(frozen=True)
class DeliveryNews:
    """A delivery that finished (status terminal) or will run again (pending)."""

    at: datetime  # finished, or last changed
    event_id: int
    destination: str
    status: str
    attempts: int
    status_code: int | None
    error: str | None
    next_attempt_at: datetime | None = None  # pending: when it runs again
    deferred: bool = False  # pending: waiting without spending an attempt (throttle, breaker, 429)


News = NewEvent | DeliveryNews


@dataclass(frozen=True)
class Seen:
    """What a poll saw of an outstanding delivery."""

    status: str
    attempts: int
    deferrals: int


class Follower:
    """Remembers what it has seen; each poll() returns what changed since, oldest first."""

    def __init__(self, runtime: Runtime, filters: EventFilter = EventFilter()):
        self.runtime, self.filters = runtime, filters
        self.seen_events: set[int] = set()
        self.failures_since = utcnow()
        self.shown_failures: dict[int, datetime] = {}  # delivery id -> finished_at, lately
        with runtime.session() as session:
            self.last_event_id = session.scalar(sa.select(sa.func.max(Event.id))) or 0
            self.seen_events = set(session.scalars(self._new_events_query()))
            self.watched = self._outstanding(session)

    def poll(self) -> list[News]:
        started = utcnow()
        found: list[News] = []
        with self.runtime.session() as session:
            for event in session.scalars(self._new_events_query(Event).options(selectinload(Event.deliveries))):
                found.append(NewEvent(event.received_at, event.id, event.source, event.type, event.status))
                # A delivery already watched (it came in with the first look) is followed below.
                found += self._news([d for d in event.deliveries if self._wanted(d) and d.id not in self.watched], {})
                self._saw_event(event.id)
            outstanding = self._outstanding(session)
            # Gone from the outstanding ones (finished, mostly), or back pending after a run.
            looked_at = [i for i in self.watched if i not in outstanding or outstanding[i] != self.watched[i]]
            found += self._news(session.scalars(sa.select(Delivery).where(Delivery.id.in_(looked_at))), self.watched)
            found += self._news(session.scalars(self._failures_query()), {})
        self.watched = outstanding
        self.failures_since = started
        return sorted(found, key=lambda news: news.at)

    def _news(self, deliveries, before: dict[int, Seen]) -> list[DeliveryNews]:
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


def _news_of(delivery: Delivery, before: Seen | None) -> DeliveryNews | None:
    """What became of a delivery since `before` (None: first seen), if anything."""
    if delivery.status in DeliveryStatus.TERMINAL:
        return _delivery_news(delivery, delivery.finished_at or delivery.updated_at)
    ran = delivery.attempts > (before.attempts if before else 0) or (
        before is not None and before.status == DeliveryStatus.IN_FLIGHT
    )
    if delivery.status != DeliveryStatus.PENDING or not ran:
        return None  # running, or waiting for its first run
    deferred = delivery.deferrals > (before.deferrals if before else 0)
    return _delivery_news(delivery, delivery.updated_at, delivery.next_attempt_at, deferred)


def _delivery_news(
    delivery: Delivery, at: datetime, next_attempt_at: datetime | None = None, deferred: bool = False
) -> DeliveryNews:
    return DeliveryNews(
        at=at,
        event_id=delivery.event_id,
        destination=delivery.destination,
        status=delivery.status,
        attempts=delivery.attempts,
        status_code=delivery.last_status_code,
        error=delivery.last_error,
        next_attempt_at=next_attempt_at,
        deferred=deferred,
    )
