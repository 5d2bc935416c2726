"""`relay events stats` for a terminal (what it reports: operations.stats)."""

from __future__ import annotations

from relay.durations import human_duration
from web.cli.support import styled


def print_stats(stats: dict, out) -> None:
    """`relay events stats` for a terminal: one rich table per part, so columns line up whatever
    the markup of a status."""
    from rich.markup import escape
    from rich.table import Column, Table

    since = f"{stats['since'][:19]} UTC"
    events = Table(
        "status",
        "type",
        Column("events", justify="right"),
        title=f"Events received since {since}",
        title_justify="left",
    )
    for row in stats["events"]:
        events.add_row(styled(row["status"]), row["type"], str(row["count"]))
    out.print(events if stats["events"] else f"Events received since {since}: none")
    oldest = stats["oldest_pending_s"]
    out.print(f"Oldest pending delivery: {human_duration(oldest) if oldest is not None else 'none'}")
    failed = stats["failed_by_destination"]
    out.print(
        f"Failed deliveries since {since}: "
        + (", ".join(f"{destination} {count}" for destination, count in failed.items()) or "none")
    )
    parked = stats["parked_by_destination"]
    if not parked:
        out.print("Parked by a reserve now: none")
    else:
        table = Table(
            Column("deliveries", justify="right"),
            "destination",
            "lane",
            Column("why", overflow="fold"),
            title="Parked by a reserve now (pending, no attempt spent)",
            title_justify="left",
        )
        for destination, found in parked.items():
            for group in found["reasons"]:
                why = group["reason"].removeprefix("parked: ")
                table.add_row(str(group["count"]), destination, group["lane"], escape(why))
        out.print(table)
    if stats["top_errors"]:
        errors = Table(
            Column("deliveries", justify="right"),
            "destination",
            Column("error", overflow="fold"),
            title="Most common errors",
            title_justify="left",
        )
        for error in stats["top_errors"]:
            errors.add_row(str(error["count"]), error["destination"], escape(error["error"]))
        out.print(errors)
    if stats["vendors"] is None:
        out.print(f"Throttle and circuit breaker: {stats['vendors_unavailable']}", markup=False)
    elif stats["vendors"]:
        vendors = Table(
            "vendor",
            "breaker",
            "limit",
            Column("calls in window", justify="right"),
            Column("next slot in", justify="right"),
            Column("paused for", justify="right"),
            title="Throttle and circuit breaker",
            title_justify="left",
        )
        for vendor, state in stats["vendors"].items():
            vendors.add_row(
                vendor,
                state["breaker"],
                state["limit"],
                str(state["calls_in_window"]),
                f"{state['next_slot_in_s']:g}s",
                f"{state['paused_for_s']:g}s" if state["paused_for_s"] else "-",
            )
        out.print(vendors)
