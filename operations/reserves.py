"""What the reserves (workers.reserves) hold back, as an operator sees it: the deliveries they
parked (pending, deferred with a reason that starts "parked: ", no attempt spent), by reserve
lane and reason; and the vendor's day as the reserves read it from its headers, in Redis.

`relay destinations status`, `relay events stats`, the console's Overview, the parked alert and
the scrape's gauges all read them from here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from relay.models import BACKLOG, Delivery
from relay.runtime import Runtime


@dataclass(frozen=True)
class Parked:
    """Pending deliveries a reserve stopped (workers.reserves), of one reserve lane (live,
    retry: a live delivery's later attempts, catch-up) and one reason, the engine's own words
    ("parked: Spruce's daily remaining at its catch-up reserve (25%)")."""

    lane: str
    reason: str
    count: int


# A reserve's deferral reason (workers.reserves), and the lane it stopped as the engine tells it:
# catch-up work, a live delivery that failed before (its later attempts: the retry lane), live.
PARKED = sa.text("last_error LIKE 'parked:%'")
PENDING = sa.text("status = 'pending'")
RESERVE_LANE = sa.case(
    (Delivery.lane == sa.literal_column("'catch_up'"), sa.literal_column("'catch-up'")),
    (Delivery.attempts > Delivery.deferrals, sa.literal_column("'retry'")),
    else_=sa.literal_column("'live'"),
)
RESERVE_LANES = ("live", "retry", "catch-up")


def parked_deliveries(session: Session, names: list[str] | None = None) -> dict[str, list[Parked]]:
    """Each destination's parked deliveries (of `names`; None: all), by reserve lane and reason.

    PostgreSQL finds them from two indexes (the pending ones of ix_deliveries_due, ANDed with
    ix_deliveries_last_error_trgm's `parked:` rows: a finished delivery keeps its last error),
    then reads each row for its lane and attempts: linear in what is parked, 0.5 s for 150,000
    parked among 1.2 million deliveries on the 2-core development machine, milliseconds for a
    few thousand. Its predicates are literal SQL, as the indexes' are."""
    query = sa.select(Delivery.destination, RESERVE_LANE, Delivery.last_error, sa.func.count()).where(
        BACKLOG, PENDING, PARKED
    )
    if names is not None:
        query = query.where(Delivery.destination.in_(names))
    rows = session.execute(query.group_by(Delivery.destination, RESERVE_LANE, Delivery.last_error))
    found: dict[str, list[Parked]] = defaultdict(list)
    for destination, lane_name, reason, count in rows:
        found[destination].append(Parked(lane_name, reason, count))
    for parked in found.values():
        parked.sort(key=lambda p: (RESERVE_LANES.index(p.lane), p.reason))
    return dict(found)


def parked_json(parked: list[Parked]) -> dict[str, Any]:
    """One destination's parked deliveries as `--json` shows them."""
    by_lane: dict[str, int] = defaultdict(int)
    for p in parked:
        by_lane[p.lane] += p.count
    return {
        "count": sum(by_lane.values()),
        "by_lane": dict(by_lane),
        "reasons": [{"lane": p.lane, "reason": p.reason, "count": p.count} for p in parked],
    }


@dataclass(frozen=True)
class DailyReading:
    """The vendor's day as the reserves keep it in Redis (workers.throttle.Throttle.day): its
    newest answer's daily remaining and limit, read at `at`; and what was learned of its length,
    since Spruce documents none: when it last turned over and how long a day lasted."""

    remaining: int
    limit: int | None
    at: datetime
    turned_at: datetime | None = None
    day_s: float | None = None

    @property
    def next_turn(self) -> datetime | None:
        if self.turned_at is None or self.day_s is None:
            return None
        return self.turned_at + timedelta(seconds=self.day_s)

    def to_json(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {"read_at": when(self.at), "turned_over_at": when(self.turned_at), "day_s": self.day_s}


def daily_readings(runtime: Runtime) -> dict[str, DailyReading]:
    """Each configured destination's daily reading, where its vendor stated a day (Spruce's); none
    without a shared Redis (each process would read its own) or while Redis is away."""
    if not runtime.shares_redis:
        return {}
    found = {}
    try:
        for name, destination in runtime.config.configured().items():
            guard = destination.client(runtime).guard
            day = guard.throttle.day() if guard is not None else {}
            if "remaining" in day and "at" in day:
                found[name] = DailyReading(
                    day["remaining"],
                    day.get("limit"),
                    _from_ms(day["at"]),
                    _from_ms(day["turned_at"]) if "turned_at" in day else None,
                    day["day_ms"] / 1000 if "day_ms" in day else None,
                )
    except redis.RedisError:
        return {}
    return found


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
