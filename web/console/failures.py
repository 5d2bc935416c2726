"""Failures: failed deliveries grouped by cause, and replaying a group: its confirmation (the
dry run's estimate), the replay itself (operators), and its progress (operations.failures says
how groups are named and bounded, operations.replay how progress is followed)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from flask import abort, redirect, render_template, request, url_for

from operations.failures import (
    DEFAULT_DAYS,
    SCAN_LIMIT,
    WINDOW_DAYS,
    BadGroup,
    FailureGroup,
    estimate_group_replay,
    failure_groups,
    parse_since,
    replay_group,
    window_start,
)
from operations.replay import replay_progress, sending_estimates
from relay.durations import human_duration
from relay.models import DeliveryStatus
from web.console.blueprint import actor, bp, operator_only, runtime

# While a replay's deliveries are on their way, its progress page reloads this often (seconds).
REFRESH_S = 2


@bp.get("/failures")
def failures():
    days = _days(request.args.get("days"))
    scan = failure_groups(runtime(), window_start(days))
    return render_template(
        "console/failures.html", scan=scan, days=days, windows=WINDOW_DAYS, scan_limit=SCAN_LIMIT, when=_when
    )


@bp.get("/failures/replay")
def failures_confirm():
    group, since = _group_and_since(request.args)
    estimate = estimate_group_replay(runtime(), group, since, actor())
    return render_template(
        "console/failures_confirm.html",
        group=group,
        since=since,
        estimate=estimate,
        result=estimate.result,
        estimates=sending_estimates(runtime(), estimate.result),
        human_duration=human_duration,
        when=_when,
    )


@bp.post("/failures/replay")
@operator_only
def failures_replay():
    group, since = _group_and_since(request.form)
    result = replay_group(runtime(), group, since, actor())
    if result.audit_entry_id is None:  # nothing failed any more: the confirmation says so
        return redirect(url_for("console.failures_confirm", group=group.text, since=since.isoformat()), 303)
    return redirect(url_for("console.failures_progress", entry_id=result.audit_entry_id), 303)


@bp.get("/failures/replays/<int:entry_id>")
def failures_progress(entry_id: int):
    progress = replay_progress(runtime(), entry_id)
    if progress is None:
        abort(404, f"Audit entry {entry_id} records no replay whose progress can be followed.")
    counts = {
        "Pending": progress.count(DeliveryStatus.PENDING),
        "In flight": progress.count(DeliveryStatus.IN_FLIGHT),
        "Succeeded": progress.count(DeliveryStatus.SUCCEEDED, DeliveryStatus.SUPERSEDED),
        "Failed again": progress.count(DeliveryStatus.FAILED),
    }
    return render_template(
        "console/failures_progress.html", progress=progress, counts=counts, refresh_s=REFRESH_S, when=_when
    )


def _days(text: str | None) -> int:
    if text is None:
        return DEFAULT_DAYS
    if not text.isdigit() or int(text) not in WINDOW_DAYS:
        abort(400, f"days is one of {', '.join(map(str, WINDOW_DAYS))}.")
    return int(text)


def _group_and_since(values: Mapping[str, str]) -> tuple[FailureGroup, datetime]:
    text = values.get("group")
    if not text:
        abort(400, "Which failure group? The group parameter is missing: pick one on the Failures page.")
    try:
        group = FailureGroup.parse(text, runtime().destinations)
    except BadGroup as exc:
        abort(400, f"Not a failure group: {exc}.")
    since_text = values.get("since")
    try:
        since = parse_since(since_text) if since_text else window_start(DEFAULT_DAYS)
    except ValueError as exc:
        abort(400, f"Bad since: {exc}.")
    return group, since


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
