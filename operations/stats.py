"""What `relay events stats` reports: the store's counts over a window of time, the deliveries a
reserve parked now (workers.reserves), and each vendor's throttle and breaker."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relay.models import BACKLOG, Delivery, DeliveryStatus, Event, utcnow
from relay.runtime import Runtime

TOP_ERRORS = 5
ERRORS_SCANNED = 10_000
# Vendor errors end with the vendor's request id: the same error, told apart only by it.
REQUEST_ID = re.compile(r"\s*\[req [^\]]*\]")


# Without REDIS_URL the throttle and breaker live inside each process: the reading process's would
# always read "closed, 0 calls", which is not the workers'.
VENDORS_UNSEEN = (
    "not visible: no REDIS_URL, so they live inside the worker process (under relay dev: . instance/dev.env first)"
)


def collect_stats(runtime: Runtime, since: datetime) -> dict:
    with runtime.session() as session:
        stats = store_stats(session, since)
    if not runtime.shares_redis:
        return stats | {"vendors": None, "vendors_unavailable": VENDORS_UNSEEN}
    return stats | {"vendors": vendor_states(runtime)}


def store_stats(session: Session, since: datetime) -> dict:
    """What the store says: the events received since `since` per status and type, the oldest
    pending delivery, and the deliveries failed since `since` with their most common errors.

    The counts cover the window, not the whole store: counting all of a million events took
    0.8 s on the 2-core development machine (0.3 s from an index; bench/million), a day's take
    milliseconds."""
    now = utcnow()
    events = session.execute(
        sa.select(Event.status, Event.type, sa.func.count())
        .where(Event.received_at >= since)
        .group_by(Event.status, Event.type)
        .order_by(Event.status, Event.type)
    ).all()
    oldest_pending = session.scalar(
        sa.select(sa.func.min(Delivery.created_at)).where(
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT])
        )
    )
    recent_failures = (Delivery.status == DeliveryStatus.FAILED, Delivery.finished_at >= since)
    failed = session.execute(
        sa.select(Delivery.destination, sa.func.count())
        .where(*recent_failures)
        .group_by(Delivery.destination)
        .order_by(Delivery.destination)
    ).all()
    errors = Counter(
        (destination, REQUEST_ID.sub("", error or "").strip())
        for destination, error in session.execute(
            sa.select(Delivery.destination, Delivery.last_error).where(*recent_failures).limit(ERRORS_SCANNED)
        )
    )
    return {
        "since": since.isoformat(),
        "events": [{"status": s, "type": t, "count": n} for s, t, n in events],
        "oldest_pending_s": (now - oldest_pending).total_seconds() if oldest_pending else None,
        "failed_by_destination": dict(failed),
        "top_errors": [{"destination": d, "error": e, "count": n} for (d, e), n in errors.most_common(TOP_ERRORS)],
        "parked_by_destination": {d: parked_json(p) for d, p in sorted(parked_deliveries(session).items())},
    }


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


def vendor_states(runtime: Runtime) -> dict[str, dict]:
    config = runtime.config
    states = {}
    for name, destination in config.configured().items():
        guard = destination.client(runtime).guard
        states[name] = {"breaker": guard.breaker.state(), **guard.throttle.snapshot()}
    return states
