"""The console's overview: each configured destination's health at a glance (its throttle and
breaker, backlog, what finished lately, its last failure, the rate limits the vendor last
stated), deliveries per minute over the last hours, the sweep's last run and the intake's last
webhook.

Every query reads a bounded window or a few rows of an index (0013_overview's, and the
primary keys), so the page answers in milliseconds on a million events:
- backlog: ix_deliveries_backlog (pending and in-flight deliveries only);
- parked (what a reserve stopped, workers.reserves): operations.reserves.parked_deliveries, the one
  query that reads a row per delivery it counts (milliseconds for a few thousand parked);
- finished in the last hour, day (and when the day's newest failure did), per minute, and that
  failure's error: ix_deliveries_destination_finished (destination, status, finished_at);
- the vendor's rate limits: the newest RATE_SCAN attempts by primary key, each joined to its
  delivery by primary key;
- the last webhook: ix_events_webhook_received.
Predicates a partial index is declared with are written as literal SQL (relay.models' BACKLOG,
source = 'webhook'): a bound parameter would not prove that the index covers the query.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from operations.doctor import check_sweep
from operations.reserves import Parked, parked_deliveries
from operations.stats import VENDORS_UNSEEN, vendor_states
from relay.checks import Check
from relay.models import BACKLOG, Delivery, DeliveryAttempt, DeliveryStatus, Event, utcnow
from relay.runtime import Runtime

CHART_MINUTES = 180
# How far back the rate limits a vendor stated are looked for: a few minutes of traffic.
RATE_SCAN = 500
BRIEF_ERROR = 120
# A superseded delivery had nothing left to send (newer values were there first): delivered.
DELIVERED = (DeliveryStatus.SUCCEEDED, DeliveryStatus.SUPERSEDED)
ENDED = (*DELIVERED, DeliveryStatus.FAILED)
WEBHOOK = sa.text("source = 'webhook'")

DELIVERING, BREAKER_OPEN, HALF_OPEN, PAUSED, NOT_VISIBLE, UNKNOWN = (
    "delivering",
    "breaker open",
    "breaker half-open",
    "paused",
    "not visible",
    "unknown",
)


@dataclass(frozen=True)
class State:
    """Whether calls go: the account's breaker and throttle, shared in Redis by every process."""

    name: str  # one of DELIVERING, BREAKER_OPEN, HALF_OPEN, PAUSED, NOT_VISIBLE, UNKNOWN
    detail: str | None = None
    throttle: ThrottleUse | None = None  # None: not visible (no REDIS_URL) or Redis unreachable


@dataclass(frozen=True)
class ThrottleUse:
    """The shared throttle's current window (workers.throttle.Throttle.snapshot)."""

    limit: str  # "100/60s"
    calls_in_window: int
    next_slot_in_s: float
    paused_for_s: float
    vendor_remaining: int | None


@dataclass(frozen=True)
class Backlog:
    pending: int = 0
    in_flight: int = 0
    oldest_waiting_s: float | None = None

    @property
    def total(self) -> int:
        return self.pending + self.in_flight


@dataclass(frozen=True)
class Counts:
    succeeded: int = 0  # superseded ones included: nothing was left to send
    failed: int = 0


@dataclass(frozen=True)
class LastError:
    """The error of the newest delivery that failed in the last 24 hours (scrubbed by the engine),
    cut to BRIEF_ERROR characters."""

    brief: str
    at: datetime


@dataclass(frozen=True)
class RateLimits:
    """What the vendor's rate headers said on its newest answer that stated any (workers.vendor_http's
    RateLimitHeaders, by name: limit, remaining, reset_after, daily_limit, daily_remaining)."""

    reported_at: datetime
    values: dict[str, float]  # whole numbers as int


@dataclass(frozen=True)
class DestinationHealth:
    name: str
    title: str
    state: State
    backlog: Backlog
    last_hour: Counts
    last_day: Counts
    last_error: LastError | None
    rate_limits: RateLimits | None
    parked: list[Parked] = field(default_factory=list)  # by lane (live, retry, catch-up), then reason


@dataclass(frozen=True)
class Minute:
    start: datetime
    succeeded: int
    failed: int

    @property
    def total(self) -> int:
        return self.succeeded + self.failed


@dataclass(frozen=True)
class Overview:
    at: datetime
    destinations: list[DestinationHealth]
    minutes: list[Minute]  # the last CHART_MINUTES, oldest first, the current one last
    sweep: Check
    last_webhook_at: datetime | None


def overview(runtime: Runtime) -> Overview:
    now = utcnow()
    configured = runtime.config.configured()
    names = list(configured)
    states = _states(runtime, names)
    with runtime.session() as session:
        backlogs = _backlogs(session, names, now)
        parked = parked_deliveries(session, names)
        last_hour, _ = _finished_since(session, names, now - timedelta(hours=1))
        last_day, newest_failures = _finished_since(session, names, now - timedelta(days=1))
        minutes = _per_minute(session, names, now)
        rate_limits = stated_rate_limits(session, names)
        last_errors = {name: _last_error(session, name, at) for name, at in newest_failures.items()}
        last_webhook_at = session.scalar(
            sa.select(Event.received_at).where(WEBHOOK).order_by(Event.received_at.desc()).limit(1)
        )
    destinations = [
        DestinationHealth(
            name=name,
            title=destination.settings.title or name.capitalize(),
            state=states[name],
            backlog=backlogs.get(name, Backlog()),
            last_hour=last_hour.get(name, Counts()),
            last_day=last_day.get(name, Counts()),
            last_error=last_errors.get(name),
            rate_limits=rate_limits.get(name),
            parked=parked.get(name, []),
        )
        for name, destination in configured.items()
    ]
    return Overview(now, destinations, minutes, check_sweep(runtime), last_webhook_at)


def _states(runtime: Runtime, names: list[str]) -> dict[str, State]:
    if not runtime.shares_redis:
        unseen = State(NOT_VISIBLE, VENDORS_UNSEEN.removeprefix(f"{NOT_VISIBLE}: "))
        return dict.fromkeys(names, unseen)
    try:
        vendors = vendor_states(runtime)
    except redis.RedisError as exc:
        return dict.fromkeys(names, State(UNKNOWN, f"Redis unreachable ({type(exc).__name__})"))
    return {name: _state(vendors[name]) for name in names}


def _state(vendor: dict) -> State:
    throttle = ThrottleUse(
        vendor["limit"],
        int(vendor["calls_in_window"]),
        vendor["next_slot_in_s"],
        vendor["paused_for_s"],
        vendor["vendor_remaining"],
    )
    if vendor["breaker"] == "open":
        why = "calls stopped after failures in a row or a rejected credential; they resume after a cool-down"
        return State(BREAKER_OPEN, why, throttle)
    if vendor["breaker"] == "half-open":
        return State(HALF_OPEN, "one probe call decides whether calls resume", throttle)
    if throttle.paused_for_s > 0:
        return State(PAUSED, f"the vendor asked to wait: calls resume in {throttle.paused_for_s:g} s", throttle)
    return State(DELIVERING, None, throttle)


def _backlogs(session: Session, names: list[str], now: datetime) -> dict[str, Backlog]:
    rows = session.execute(
        sa.select(Delivery.destination, Delivery.status, sa.func.count(), sa.func.min(Delivery.created_at))
        .where(BACKLOG, Delivery.destination.in_(names))
        .group_by(Delivery.destination, Delivery.status)
    )
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    oldest: dict[str, datetime] = {}
    for destination, status, count, created_at in rows:
        counts[destination][status] = count
        oldest[destination] = min(oldest.get(destination, now), _utc(created_at))
    return {
        destination: Backlog(
            pending=by_status.get(DeliveryStatus.PENDING, 0),
            in_flight=by_status.get(DeliveryStatus.IN_FLIGHT, 0),
            oldest_waiting_s=max((now - oldest[destination]).total_seconds(), 0.0),
        )
        for destination, by_status in counts.items()
    }


def _finished_since(
    session: Session, names: list[str], since: datetime
) -> tuple[dict[str, Counts], dict[str, datetime]]:
    """What each destination finished since `since`, and when its newest failure among them did."""
    rows = session.execute(
        sa.select(Delivery.destination, Delivery.status, sa.func.count(), sa.func.max(Delivery.finished_at))
        .where(*_ended(names, since))
        .group_by(Delivery.destination, Delivery.status)
    )
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    newest_failures: dict[str, datetime] = {}
    for destination, status, count, newest in rows:
        failed = status == DeliveryStatus.FAILED
        counts[destination]["failed" if failed else "succeeded"] += count
        if failed and newest is not None:  # a group's max: never None, as finished_at is not
            newest_failures[destination] = newest
    return {destination: Counts(**by_outcome) for destination, by_outcome in counts.items()}, newest_failures


def _per_minute(session: Session, names: list[str], now: datetime) -> list[Minute]:
    first = int(now.timestamp()) // 60 - (CHART_MINUTES - 1)  # minutes since the epoch
    minute = _minute_number(session)
    rows = session.execute(
        sa.select(minute, Delivery.status, sa.func.count())
        .where(*_ended(names, datetime.fromtimestamp(first * 60, UTC)))
        .group_by(minute, Delivery.status)
    )
    succeeded: dict[int, int] = defaultdict(int)
    failed: dict[int, int] = defaultdict(int)
    for number, status, count in rows:
        (failed if status == DeliveryStatus.FAILED else succeeded)[int(number)] += count
    return [
        Minute(datetime.fromtimestamp(number * 60, UTC), succeeded[number], failed[number])
        for number in range(first, first + CHART_MINUTES)
    ]


def _minute_number(session: Session) -> sa.ColumnElement[Any]:
    """The minute a delivery finished in, counted from the Unix epoch, as the store computes it
    (a whole number: grouped by a fraction, each second would be a group of its own)."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.floor(sa.extract("epoch", Delivery.finished_at) / 60)
    # SQLite keeps naive UTC text ("2026-12-08 10:00:00.123456"); %s reads it as UTC; // is
    # SQLite's integer division.
    return sa.cast(sa.func.strftime("%s", Delivery.finished_at), sa.Integer) // 60


def _ended(names: list[str], since: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        Delivery.destination.in_(names),
        Delivery.status.in_(ENDED),
        Delivery.finished_at.is_not(None),  # the partial index's own predicate
        Delivery.finished_at >= since,
    )


def _last_error(session: Session, name: str, finished_at: datetime) -> LastError:
    """The error of the failure that finished at `finished_at`, found by the finished index's whole key.

    Not `ORDER BY finished_at DESC LIMIT 1`: PostgreSQL reads that one from
    ix_deliveries_failed_finished, every destination's failures newest first, and when this
    destination's last failure is old it reads all the others' since (0.15 s for 22,000 on the
    development machine)."""
    error = session.scalar(
        sa.select(Delivery.last_error)
        .where(Delivery.destination == name, Delivery.status == DeliveryStatus.FAILED)
        .where(Delivery.finished_at == finished_at)
        .limit(1)
    )
    return LastError(_brief(error or "(no error recorded)"), _utc(finished_at))


def _brief(error: str) -> str:
    return error if len(error) <= BRIEF_ERROR else error[: BRIEF_ERROR - 1].rstrip() + "…"


def stated_rate_limits(session: Session, names: list[str]) -> dict[str, RateLimits]:
    """Each destination's newest stated rate limits among the newest RATE_SCAN attempts."""
    newest = sa.select(DeliveryAttempt.id).order_by(DeliveryAttempt.id.desc()).limit(RATE_SCAN).subquery()
    rows = session.execute(
        sa.select(Delivery.destination, DeliveryAttempt.finished_at, DeliveryAttempt.rate_limits)
        .join(newest, newest.c.id == DeliveryAttempt.id)
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(Delivery.destination.in_(names))
        .order_by(DeliveryAttempt.id.desc())
    )
    found: dict[str, RateLimits] = {}
    for destination, finished_at, limits in rows:
        values = {key: _number(value) for key, value in (limits or {}).items() if isinstance(value, (int, float))}
        if destination not in found and values:
            found[destination] = RateLimits(_utc(finished_at), values)
    return found


def _number(value: float) -> float:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _utc(value: datetime) -> datetime:
    """The store's times (UTCDateTime) are aware; an aggregate's may come back naive from SQLite."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
