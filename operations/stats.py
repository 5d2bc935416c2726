"""What `relay events stats` reports: the store's counts over a window of time, the deliveries a
reserve parked now (workers.reserves), and each vendor's throttle and breaker."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from operations.reserves import parked_deliveries, parked_json
from relay.models import Delivery, DeliveryStatus, Event, utcnow
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


def vendor_states(runtime: Runtime) -> dict[str, dict]:
    config = runtime.config
    states = {}
    for name, destination in config.configured().items():
        guard = destination.client(runtime).guard
        states[name] = {"breaker": guard.breaker.state(), **guard.throttle.snapshot()}
    return states
