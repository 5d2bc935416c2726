"""Holding a destination while its vendor is repaired, resuming it, and each destination's state
(`relay destinations …` and the console's Overview).

A hold is a row of destination_holds (relay.models.DestinationHold), so every process sees it
and it outlives their restarts. While it stands, the intake goes on storing that destination's
deliveries and they wait, pending: the dispatcher publishes none (workers.dispatch), a worker that
takes one published before the hold returns it to the store without an attempt (workers.engine),
and the sweep does not take them for lost (workers.sweep). A run already under way when the hold
begins finishes. The time a delivery spends held does not count towards its age
(RELAY_RETRY_MAX_AGE). A resume ends the hold; the dispatcher then publishes the backlog in the
order it arrived, each lane on its queue (live before catch-up) and within the vendor's limits.

Both are audited (`destinations.hold`, `destinations.resume`). The reason is the operator's own
words, shown to every console user: it is refused when it holds an email address.

A destination's status also shows what a reserve parked (workers.reserves: pending, deferred, by
reserve lane and reason) and the vendor's daily reading as the reserves keep it in Redis; the
scrape's gauges (`waiting_gauges`) count parked and held deliveries per destination and lane.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from operations import audit
from operations.audit import Actor
from operations.overview import DestinationHealth, overview
from operations.reserves import (
    PENDING,
    RESERVE_LANE,
    RESERVE_LANES,
    DailyReading,
    Parked,
    daily_readings,
    parked_deliveries,
    parked_json,
)
from relay.models import BACKLOG, CURRENT_HOLD, Delivery, DeliveryStatus, DestinationHold, Event, Lane, utcnow
from relay.runtime import Runtime
from schemas.events import EVENTS
from schemas.sparkloop import FirstPersonAt

MAX_REASON = 200
HELD = "held"
# Something@something.something: a reason is shown to every console user and kept in the audit log.
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")


class BadDestination(ValueError):
    """A name no destination has; the message names those there are."""


class BadReason(ValueError):
    """A reason that cannot be kept as given; the message says why."""


@dataclass(frozen=True)
class Hold:
    """A hold in force: since when, by whom (as the audit log names them) and why."""

    destination: str
    reason: str | None
    held_by: str
    held_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "held_by": self.held_by, "held_at": self.held_at.isoformat()}


def holds(runtime: Runtime) -> dict[str, Hold]:
    """The holds in force, by destination (one small table; every process reads the same)."""
    with runtime.session() as session:
        return {
            row.destination: Hold(row.destination, row.reason, row.held_by, row.held_at)
            for row in session.scalars(sa.select(DestinationHold).where(CURRENT_HOLD))
        }


def check_destination(runtime: Runtime, name: str, held: dict[str, Hold] | None = None) -> None:
    """A configured destination's name (or, given the holds, a held one's: its credentials may
    have gone since), else BadDestination naming the configured ones."""
    configured = runtime.config.configured()
    if name not in configured and name not in (held or {}):
        raise BadDestination(f"no destination is named {name!r}: the destinations are {', '.join(configured)}")


def clean_reason(reason: str | None) -> str | None:
    """The reason as kept: on one line, trimmed; None when empty."""
    text = " ".join((reason or "").split())
    if not text:
        return None
    if len(text) > MAX_REASON:
        raise BadReason(f"the reason is longer than {MAX_REASON} characters")
    if _EMAIL.search(text):
        raise BadReason(
            "the reason holds an email address: every console user sees it and the audit log keeps it; "
            "say it without one"
        )
    return text


@dataclass(frozen=True)
class Estimate:
    """How long a backlog takes at the current limits: its vendor calls at most (each delivery's
    most, by its event type), at Relay's rate for the destination, each lane paced as the throttle
    paces it (workers.throttle.sending_time_s), with no other traffic; and the day's remaining
    calls when the vendor stated them (Spruce's s-ratelimit-daily-remaining)."""

    calls: int
    took_s: float
    limit: int
    period_s: float
    daily_remaining: int | None = None

    @property
    def beyond_today(self) -> bool:
        """More calls, at most, than the vendor said the day has left."""
        return self.daily_remaining is not None and self.calls > self.daily_remaining

    def to_json(self) -> dict[str, Any]:
        return {
            "calls_at_most": self.calls,
            "seconds": round(self.took_s, 1),
            "limit": f"{self.limit}/{self.period_s:g}s",
            "daily_remaining": self.daily_remaining,
            "beyond_today": self.beyond_today,
        }


@dataclass(frozen=True)
class DestinationStatus:
    """A destination as an operator sees it: the overview's health (breaker, throttle, backlog,
    the vendor's rate limits), its hold, what waits per lane and how long the backlog takes."""

    health: DestinationHealth
    hold: Hold | None
    pending_by_lane: dict[str, int] = field(default_factory=dict)
    estimate: Estimate | None = None
    day: DailyReading | None = None

    @property
    def name(self) -> str:
        return self.health.name

    @property
    def state(self) -> str:
        """`held`, or the overview's state (delivering, breaker open, …)."""
        return HELD if self.hold else self.health.state.name

    @property
    def pending(self) -> int:
        return sum(self.pending_by_lane.values())

    @property
    def parked(self) -> list[Parked]:
        return self.health.parked

    @property
    def daily(self) -> tuple[int, int | None] | None:
        """(remaining, limit) of the vendor's day: the reserves' reading, else the attempts'."""
        if self.day is not None:
            return self.day.remaining, self.day.limit
        return _daily(self.health)

    def to_json(self) -> dict[str, Any]:
        health, throttle = self.health, self.health.state.throttle
        daily = self.daily
        return {
            "name": self.name,
            "title": health.title,
            "state": self.state,
            "held": self.hold.to_json() if self.hold else None,
            "calls": {"state": health.state.name, "detail": health.state.detail},
            "window": None
            if throttle is None
            else {
                "limit": throttle.limit,
                "calls_in_window": throttle.calls_in_window,
                "next_slot_in_s": throttle.next_slot_in_s,
                "vendor_remaining": throttle.vendor_remaining,
            },
            "daily": None
            if daily is None
            else {"remaining": daily[0], "limit": daily[1]} | (self.day.to_json() if self.day else {}),
            "parked": parked_json(self.parked),
            "backlog": {
                "pending": health.backlog.pending,
                "in_flight": health.backlog.in_flight,
                "oldest_waiting_s": health.backlog.oldest_waiting_s,
                "pending_by_lane": self.pending_by_lane,
            },
            "estimate": self.estimate.to_json() if self.estimate else None,
        }


def _daily(health: DestinationHealth) -> tuple[int, int | None] | None:
    """(remaining, limit) of the vendor's day, as its newest answer that stated limits said them
    (the overview reads them from the attempt history); None when none said."""
    stated = health.rate_limits.values if health.rate_limits else {}
    remaining = stated.get("daily_remaining")
    if remaining is None:
        return None
    limit = stated.get("daily_limit")
    return int(remaining), None if limit is None else int(limit)


def status(runtime: Runtime) -> list[DestinationStatus]:
    """Each configured destination, as `relay destinations status` shows it. The backlog's
    estimate reads the backlog's rows (by lane and event type): meant for the command and a
    resume's confirmation, not for a page loaded every few seconds."""
    seen = overview(runtime)
    current = holds(runtime)
    days = daily_readings(runtime)
    backlog = _backlog_by_lane_and_type(runtime, [d.name for d in seen.destinations if d.backlog.total])
    found = []
    for health in seen.destinations:
        mine = backlog.get(health.name, {})
        pending: dict[str, int] = defaultdict(int)
        for (status_, lane, _), count in mine.items():
            if status_ == DeliveryStatus.PENDING:
                pending[lane] += count
        day = days.get(health.name)
        estimate = _estimate(runtime, health, mine, day)
        found.append(DestinationStatus(health, current.get(health.name), dict(pending), estimate, day))
    return found


def destination_status(runtime: Runtime, name: str) -> DestinationStatus | None:
    """One destination's status; None when it is held but no longer configured."""
    check_destination(runtime, name, holds(runtime))
    return next((found for found in status(runtime) if found.name == name), None)


def _backlog_by_lane_and_type(runtime: Runtime, names: list[str]) -> dict[str, dict[tuple[str, str, str], int]]:
    """destination -> (status, lane, event type) -> deliveries, for the pending and in-flight ones."""
    if not names:
        return {}
    found: dict[str, dict[tuple[str, str, str], int]] = defaultdict(dict)
    # BACKLOG as written in the partial index (ix_deliveries_backlog), on the deliveries alone.
    backlog = (
        sa.select(Delivery.destination, Delivery.status, Delivery.lane, Delivery.event_id)
        .where(BACKLOG, Delivery.destination.in_(names))
        .subquery()
    )
    with runtime.session() as session:
        rows = session.execute(
            sa.select(backlog.c.destination, backlog.c.status, backlog.c.lane, Event.type, sa.func.count())
            .join(Event, Event.id == backlog.c.event_id)
            .group_by(backlog.c.destination, backlog.c.status, backlog.c.lane, Event.type)
        )
        for destination, status_, lane, event_type, count in rows:
            found[destination][(status_, lane, event_type)] = count
    return found


def _estimate(
    runtime: Runtime, health: DestinationHealth, backlog: dict[tuple[str, str, str], int], day: DailyReading | None
) -> Estimate | None:
    if not backlog:
        return None
    destination = runtime.destinations[health.name]
    calls_by_lane: dict[Lane, int] = defaultdict(int)
    for (_, lane, event_type), count in backlog.items():
        calls_by_lane[_lane(lane)] += count * destination.most_calls(destination.sends(event_type), _people(event_type))
    throttle = destination.client(runtime).guard.throttle
    # Live work goes first, then catch-up work in the slots it leaves (workers.throttle).
    took_s = sum(throttle.sending_time_s(calls, lane) for lane, calls in calls_by_lane.items())
    daily = day.remaining if day is not None else None
    if daily is None and (stated := _daily(health)) is not None:
        daily = stated[0]
    return Estimate(sum(calls_by_lane.values()), took_s, throttle.rate.limit, throttle.rate.period_s, daily)


@dataclass(frozen=True)
class WaitingGauges:
    """What GET /metrics reads at scrape time: parked and held deliveries, by destination and
    reserve lane (live, retry, catch-up; zero where none), and each vendor's daily reading."""

    parked: dict[tuple[str, str], int]
    held: dict[tuple[str, str], int]
    daily: dict[str, DailyReading]


def waiting_gauges(runtime: Runtime) -> WaitingGauges:
    """Parked: the pending rows of ix_deliveries_backlog that a reserve stopped (read for their
    error); held: a held destination's pending rows (none read while nothing is held)."""
    names = list(runtime.config.configured())
    held_names = list(holds(runtime))
    lanes = [(name, lane) for name in dict.fromkeys([*names, *held_names]) for lane in RESERVE_LANES]
    parked, held = dict.fromkeys(lanes, 0), dict.fromkeys(lanes, 0)
    with runtime.session() as session:
        for name, found in parked_deliveries(session, names).items():
            for p in found:
                parked[(name, p.lane)] += p.count
        if held_names:
            rows = session.execute(
                sa.select(Delivery.destination, RESERVE_LANE, sa.func.count())
                .where(BACKLOG, PENDING, Delivery.destination.in_(held_names))
                .group_by(Delivery.destination, RESERVE_LANE)
            )
            for name, lane, count in rows:
                held[(name, lane)] = count
    return WaitingGauges(parked, held, daily_readings(runtime))


def _lane(lane: str) -> Lane:
    """The throttle's pace for a stored lane; one this version does not know is paced as catch-up work."""
    try:
        return Lane(lane)
    except ValueError:
        return Lane.CATCH_UP


def _people(event_type: str) -> int:
    """The most subscribers an event of this type is about (what its spec declares)."""
    spec = EVENTS.get(event_type)
    if spec is None or isinstance(spec.people, FirstPersonAt):
        return 1
    return max(len(spec.people.keys), 1)


@dataclass(frozen=True)
class Held:
    """What a hold or a resume did: the hold in force afterwards (a hold) or the one it ended (a
    resume); `changed` False when there was nothing to do (held already; not held); and the
    deliveries waiting, by lane."""

    hold: Hold | None
    changed: bool
    pending_by_lane: dict[str, int]

    @property
    def pending(self) -> int:
        return sum(self.pending_by_lane.values())


def hold(runtime: Runtime, name: str, *, reason: str | None, actor: Actor) -> Held:
    """Hold `name`'s deliveries (BadDestination, BadReason before anything is done). Held
    already: that hold stands as it was (its reason too), recorded as refused."""
    check_destination(runtime, name)
    reason = clean_reason(reason)
    with audit.audited(runtime, actor, "destinations.hold", destination=name) as entry:
        entry.details["reason"] = reason
        with runtime.session() as session:
            row = DestinationHold(destination=name, reason=reason, held_by=actor.name, held_at=utcnow())
            session.add(row)
            try:
                session.commit()
                made = Hold(name, reason, actor.name, row.held_at)
            except IntegrityError:  # one current hold per destination: another was there first
                session.rollback()
                made = None
        waiting = _pending_by_lane(runtime, name)
        entry.details["pending"] = sum(waiting.values())
        if made is None:
            entry.refused("already held")
            return Held(holds(runtime).get(name), False, waiting)
        return Held(made, True, waiting)


def resume(runtime: Runtime, name: str, *, actor: Actor) -> Held:
    """End `name`'s hold: its deliveries go, oldest first, lane by lane, within its limits. Not
    held: nothing changes, recorded as refused."""
    check_destination(runtime, name, holds(runtime))
    with audit.audited(runtime, actor, "destinations.resume", destination=name) as entry:
        with runtime.session() as session:
            ended = session.scalars(
                sa.update(DestinationHold)
                .where(DestinationHold.destination == name, CURRENT_HOLD)
                .values(resumed_at=utcnow(), resumed_by=actor.name)
                .returning(DestinationHold)
            ).one_or_none()
            session.commit()
            was = None if ended is None else Hold(name, ended.reason, ended.held_by, ended.held_at)
        waiting = _pending_by_lane(runtime, name)
        entry.details |= {"pending": sum(waiting.values()), "pending_by_lane": waiting}
        if was is None:
            entry.refused("not held")
            return Held(None, False, waiting)
        entry.details |= {"held_by": was.held_by, "held_at": was.held_at.isoformat()}
        return Held(was, True, waiting)


def _pending_by_lane(runtime: Runtime, name: str) -> dict[str, int]:
    with runtime.session() as session:
        return dict(
            session.execute(
                sa.select(Delivery.lane, sa.func.count())
                .where(BACKLOG, Delivery.destination == name, Delivery.status == DeliveryStatus.PENDING)
                .group_by(Delivery.lane)
            ).all()
        )
