"""What `relay events stats` reports: the store's counts and each vendor's throttle and breaker."""
from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

import sqlalchemy as sa
from flask import current_app

from relay.db import session_scope
from relay.models import Delivery, DeliveryStatus, Event, utcnow
from workers.destinations import configured

TOP_ERRORS = 5
ERRORS_SCANNED = 10_000
# Vendor errors end with the vendor's request id: the same error, told apart only by it.
_REQUEST_ID = re.compile(r"\s*\[req [^\]]*\]")


def collect_stats(since: datetime) -> dict:
    now = utcnow()
    with session_scope() as session:
        events = session.execute(
            sa.select(Event.status, Event.type, sa.func.count())
            .group_by(Event.status, Event.type).order_by(Event.status, Event.type)
        ).all()
        oldest_pending = session.scalar(
            sa.select(sa.func.min(Delivery.created_at))
            .where(Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT])))
        recent_failures = (Delivery.status == DeliveryStatus.FAILED, Delivery.finished_at >= since)
        failed = session.execute(
            sa.select(Delivery.destination, sa.func.count()).where(*recent_failures)
            .group_by(Delivery.destination).order_by(Delivery.destination)
        ).all()
        errors = Counter(
            (destination, _REQUEST_ID.sub("", error or "").strip())
            for destination, error in session.execute(
                sa.select(Delivery.destination, Delivery.last_error).where(*recent_failures)
                .limit(ERRORS_SCANNED))
        )
    return {
        "since": since.isoformat(),
        "events": [{"status": s, "type": t, "count": n} for s, t, n in events],
        "oldest_pending_s": (now - oldest_pending).total_seconds() if oldest_pending else None,
        "failed_by_destination": dict(failed),
        "top_errors": [{"destination": d, "error": e, "count": n}
                       for (d, e), n in errors.most_common(TOP_ERRORS)],
        "vendors": vendor_states(),
    }


def vendor_states() -> dict[str, dict]:
    config = current_app.config["RELAY"]
    states = {}
    for name, destination in configured(config).items():
        guard = destination.client(config).guard
        states[name] = {"breaker": guard.breaker.state(), **guard.throttle.snapshot()}
    return states
