"""Overview: each destination's health at a glance (operations.overview), whether it is held,
and the chart of deliveries per minute drawn here as inline SVG: bars, no script. Operators hold
a destination here and resume it, after a page that shows what is held and how long it takes
(operations.destinations)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import abort, flash, get_flashed_messages, redirect, render_template, request, url_for

from operations import destinations
from operations import overview as health
from operations.destinations import BadDestination, BadReason
from relay.durations import human_duration
from web.console.blueprint import actor, bp, operator_only, runtime

# The chart's drawing units: one per minute across, CHART_HEIGHT for the busiest minute.
CHART_HEIGHT = 60
BAR_WIDTH = 0.8


@bp.get("/")
def overview():
    seen = health.overview(runtime())

    def since(when: datetime) -> str:
        return human_duration(max((seen.at - when).total_seconds(), 0.0))

    return render_template(
        "console/overview.html",
        overview=seen,
        holds=destinations.holds(runtime()),
        chart=Chart.of(seen.minutes),
        duration=human_duration,
        since=since,
        max_reason=destinations.MAX_REASON,
        notices=get_flashed_messages(),
    )


@bp.post("/destinations/<name>/hold")
@operator_only
def destination_hold(name: str):
    try:
        held = destinations.hold(runtime(), name, reason=request.form.get("reason"), actor=actor())
    except BadDestination as exc:
        abort(404, f"{_sentence(str(exc))}.")
    except BadReason as exc:
        abort(400, f"Reason: {exc}.")
    if held.changed:
        flash(f"Held {name}: its deliveries wait until you resume it; the other destinations go on.")
    else:
        flash(f"{name} was already held; that hold stands as it was.")
    return redirect(url_for("console.overview"))


@bp.get("/destinations/<name>/resume")
@operator_only
def destination_resume_confirm(name: str):
    """What is held and how long it takes: the button that resumes."""
    try:
        found = destinations.destination_status(runtime(), name)
    except BadDestination as exc:
        abort(404, f"{_sentence(str(exc))}.")
    return render_template("console/destination_resume.html", name=name, found=found, duration=human_duration)


@bp.post("/destinations/<name>/resume")
@operator_only
def destination_resume(name: str):
    try:
        resumed = destinations.resume(runtime(), name, actor=actor())
    except BadDestination as exc:
        abort(404, f"{_sentence(str(exc))}.")
    if resumed.changed:
        go = "1 delivery goes" if resumed.pending == 1 else f"{resumed.pending} deliveries go"
        flash(f"Resumed {name}: {go}, live before catch-up, within its limits.")
    else:
        flash(f"{name} is not held: nothing to resume.")
    return redirect(url_for("console.overview"))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Bar:
    x: float
    label: str  # "14:02 UTC: 5 succeeded, 1 failed"
    succeeded_y: float
    succeeded_height: float
    failed_y: float
    failed_height: float
    width: float = BAR_WIDTH


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]  # only the minutes with deliveries
    summary: str
    first: str  # the first minute and the last, as the axis says them ("09:12 UTC")
    last: str

    @classmethod
    def of(cls, minutes: list[health.Minute]) -> Chart:
        busiest = max(minutes, key=lambda minute: minute.total)
        # Two units kept so that a part of one delivery among hundreds still shows (at least one).
        scale = (CHART_HEIGHT - 2) / busiest.total if busiest.total else 0.0
        bars = []
        for x, minute in enumerate(minutes):
            if not minute.total:
                continue
            failed_height = max(minute.failed * scale, 1.0) if minute.failed else 0.0
            succeeded_height = max(minute.succeeded * scale, 1.0) if minute.succeeded else 0.0
            bars.append(
                Bar(
                    x=x + (1 - BAR_WIDTH) / 2,
                    label=f"{minute.start:%H:%M} UTC: {minute.succeeded} succeeded, {minute.failed} failed",
                    succeeded_y=CHART_HEIGHT - succeeded_height,
                    succeeded_height=succeeded_height,
                    failed_y=CHART_HEIGHT - succeeded_height - failed_height,
                    failed_height=failed_height,
                )
            )
        first, last = (f"{minute.start:%H:%M} UTC" for minute in (minutes[0], minutes[-1]))
        return cls(len(minutes), CHART_HEIGHT, bars, _summary(minutes, busiest), first, last)


def _summary(minutes: list[health.Minute], busiest: health.Minute) -> str:
    span = f"Deliveries per minute from {minutes[0].start:%H:%M} to {minutes[-1].start:%H:%M} UTC"
    succeeded, failed = sum(m.succeeded for m in minutes), sum(m.failed for m in minutes)
    if not succeeded + failed:
        return f"{span}: none finished."
    return (
        f"{span}: {succeeded} succeeded, {failed} failed; "
        f"the busiest minute, {busiest.start:%H:%M}, had {busiest.total}."
    )
