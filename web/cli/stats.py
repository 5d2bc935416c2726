"""What `relay events stats` reports: the store's counts over a window of time, and each vendor's
throttle and breaker."""
from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from relay.db import session_scope
from relay.models import Delivery, DeliveryStatus, Event, utcnow
from web.cli.support import human_duration, styled
from workers.destinations import configured

TOP_ERRORS = 5
ERRORS_SCANNED = 10_000
# Vendor errors end with the vendor's request id: the same error, told apart only by it.
_REQUEST_ID = re.compile(r"\s*\[req [^\]]*\]")


# Without REDIS_URL the throttle and breaker live inside each process: this command's own would
# always read "closed, 0 calls", which is not the workers'.
VENDORS_UNSEEN = ("not visible: no REDIS_URL, so they live inside the worker process "
                  "(under relay dev: . instance/dev.env first)")


def collect_stats(since: datetime) -> dict:
    with session_scope() as session:
        stats = store_stats(session, since)
    if current_app.config["RELAY"].redis_url is None:
        return stats | {"vendors": None, "vendors_unavailable": VENDORS_UNSEEN}
    return stats | {"vendors": vendor_states()}


def store_stats(session: Session, since: datetime) -> dict:
    """What the store says: the events received since `since` per status and type, the oldest
    pending delivery, and the deliveries failed since `since` with their most common errors.

    The counts cover the window, not the whole store: counting all of a million events took
    0.8 s on the 2-core development machine (0.3 s from an index; bench/million), a day's take
    milliseconds."""
    now = utcnow()
    events = session.execute(
        sa.select(Event.status, Event.type, sa.func.count()).where(Event.received_at >= since)
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
    }


def vendor_states() -> dict[str, dict]:
    config = current_app.config["RELAY"]
    states = {}
    for name, destination in configured(config).items():
        guard = destination.client(config).guard
        states[name] = {"breaker": guard.breaker.state(), **guard.throttle.snapshot()}
    return states


def print_stats(stats: dict, out) -> None:
    """`relay events stats` for a terminal: one rich table per part, so columns line up whatever
    the markup of a status."""
    from rich.markup import escape
    from rich.table import Column, Table

    since = f"{stats['since'][:19]} UTC"
    events = Table("status", "type", Column("events", justify="right"),
                   title=f"Events received since {since}", title_justify="left")
    for row in stats["events"]:
        events.add_row(styled(row["status"]), row["type"], str(row["count"]))
    out.print(events if stats["events"] else f"Events received since {since}: none")
    oldest = stats["oldest_pending_s"]
    out.print(f"Oldest pending delivery: {human_duration(oldest) if oldest is not None else 'none'}")
    failed = stats["failed_by_destination"]
    out.print(f"Failed deliveries since {since}: "
              + (", ".join(f"{destination} {count}" for destination, count in failed.items()) or "none"))
    if stats["top_errors"]:
        errors = Table(Column("deliveries", justify="right"), "destination", Column("error", overflow="fold"),
                       title="Most common errors", title_justify="left")
        for error in stats["top_errors"]:
            errors.add_row(str(error["count"]), error["destination"], escape(error["error"]))
        out.print(errors)
    if stats["vendors"] is None:
        out.print(f"Throttle and circuit breaker: {stats['vendors_unavailable']}", markup=False)
    elif stats["vendors"]:
        vendors = Table("vendor", "breaker", "limit", Column("calls in window", justify="right"),
                        Column("next slot in", justify="right"), Column("paused for", justify="right"),
                        title="Throttle and circuit breaker", title_justify="left")
        for vendor, state in stats["vendors"].items():
            vendors.add_row(vendor, state["breaker"], state["limit"], str(state["calls_in_window"]),
                            f"{state['next_slot_in_s']:g}s",
                            f"{state['paused_for_s']:g}s" if state["paused_for_s"] else "-")
        out.print(vendors)
