"""Events: the list, filtered from the URL (a view can be bookmarked) and searched by email
(posted, never in a URL: the page filters by the email's digest), paged by event id; and one
event with every attempt of each delivery, its payload masked unless an operator reveals it,
and replaying it after a confirmation that shows what will be sent."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import abort, flash, get_flashed_messages, redirect, render_template, request, url_for

from operations.events import MAX_EVENT_ID, event_detail, event_exists, events_page, person_digest
from operations.filters import EVENT_STATUSES, EventFilter, event_types
from operations.replay import replay, sending_estimates
from relay.durations import human_duration
from web.console.blueprint import actor, bp, operator_only, runtime

# The filters a URL may carry, and the labels that name them on the page and in errors.
FILTER_LABELS = {
    "status": "Status",
    "type": "Type",
    "destination": "Destination",
    "received_after": "Received after",
    "received_before": "Received before",
}
DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_EMAIL_LENGTH = 254


@dataclass(frozen=True)
class Chosen:
    """The filters of a request: as EventFilter takes them, and as the URL and the form carry them."""

    filters: EventFilter
    params: dict[str, str]


@bp.get("/events")
def events():
    chosen = _chosen(request.args)
    older_than, newer_than = _cursor(request.args, "older_than"), _cursor(request.args, "newer_than")
    if older_than is not None and newer_than is not None:
        abort(400, "Bad paging cursor: a page is either older or newer than an event, not both.")
    page = events_page(runtime(), chosen.filters, older_than=older_than, newer_than=newer_than)
    return render_template(
        "console/events.html",
        page=page,
        # Each event with its deliveries' statuses by destination (a column each); a held one's reads "held".
        rows=[
            (e, {d["destination"]: "held" if d["held"] else d["status"] for d in e["deliveries"]}) for e in page.events
        ],
        params=chosen.params,
        everyone={name: value for name, value in chosen.params.items() if name != "person"},
        statuses=EVENT_STATUSES,
        types=event_types(),
        destinations=list(runtime().destinations),
        paged=older_than is not None or newer_than is not None,
        when=_when,
    )


@bp.post("/events/search")
def events_search():
    """The email becomes its digest here, so that only the digest reaches a URL, a log or history."""
    email = request.form.get("email", "").strip()
    if not email:
        abort(400, "Search by email: type the address to search for.")
    if "@" not in email or len(email) > MAX_EMAIL_LENGTH:
        abort(400, f"Search by email: not an email address (one with an @, at most {MAX_EMAIL_LENGTH} characters).")
    chosen = _chosen(request.form)
    return redirect(url_for("console.events", **chosen.params, person=person_digest(runtime(), email)))


@bp.get("/events/<int:event_id>")
def event(event_id: int):
    return _event_page(event_id, revealed=False)


@bp.post("/events/<int:event_id>/reveal")
@operator_only
def event_reveal(event_id: int):
    # Shown in the answer to this POST only (no-store, as every console page): never a GET URL.
    return _event_page(event_id, revealed=True)


@bp.get("/events/<int:event_id>/replay")
@operator_only
def event_replay_confirm(event_id: int):
    """What a replay would send (a dry run: it changes nothing), and the button that sends it."""
    _must_exist(event_id)
    force = _force(request.args)
    result = replay(runtime(), [event_id], force=force, dry_run=True, actor=actor())
    return render_template(
        "console/replay_confirm.html",
        event_id=event_id,
        force=force,
        deliveries=sorted(result.deliveries.items()),
        total=sum(result.deliveries.values()),
        estimates=sending_estimates(runtime(), result),
        skipped=sorted(result.skipped.items()),
        human_duration=human_duration,
    )


@bp.post("/events/<int:event_id>/replay")
@operator_only
def event_replay(event_id: int):
    _must_exist(event_id)
    result = replay(runtime(), [event_id], force=_force(request.form), dry_run=False, actor=actor())
    sent = len(result.delivery_ids)
    if sent:
        flash(f"Replayed {sent} deliver{'y' if sent == 1 else 'ies'}: back to pending, on the catch-up queue.")
    else:
        flash("Nothing was replayed: no delivery of this event could be sent again.")
    return redirect(url_for("console.event", event_id=event_id))


def _event_page(event_id: int, revealed: bool):
    detail = event_detail(runtime(), event_id, reveal=revealed, actor=actor() if revealed else None)
    if detail is None:
        abort(404, f"There is no event {event_id}.")
    return render_template(
        "console/event.html",
        event=detail,
        revealed=revealed,
        payload=json.dumps(detail["payload"], indent=2, ensure_ascii=False),
        validation_errors=json.dumps(detail["validation_errors"], indent=2) if detail["validation_errors"] else None,
        notices=get_flashed_messages(),
        when=_when,
    )


def _must_exist(event_id: int) -> None:
    if not event_exists(runtime(), event_id):
        abort(404, f"There is no event {event_id}.")


def _chosen(values: Mapping[str, str]) -> Chosen:
    """The filters in `values` (a query string or a posted form), each checked: 400 naming the bad one."""
    params = {name: values.get(name, "").strip() for name in (*FILTER_LABELS, "person")}
    status, event_type, destination, person = params["status"], params["type"], params["destination"], params["person"]
    if status and status not in EVENT_STATUSES:
        abort(400, f"Status: not a status of an event; choose one of {', '.join(EVENT_STATUSES)}.")
    if event_type and event_type not in event_types():
        abort(400, f"Type: not an event type Relay knows; choose one of {', '.join(event_types())}.")
    if destination and destination not in runtime().destinations:
        abort(400, f"Destination: no destination has that name; choose one of {', '.join(runtime().destinations)}.")
    if person and not DIGEST.fullmatch(person):
        abort(400, "The person filter is malformed: search by email again.")
    since, until = _time(params, "received_after"), _time(params, "received_before")
    if since and until and since >= until:
        abort(400, "Received after must be earlier than Received before.")
    for name, value in (("received_after", since), ("received_before", until)):
        params[name] = value.strftime("%Y-%m-%dT%H:%M") if value else ""
        if value and value.second:
            params[name] += value.strftime(":%S")
    filters = EventFilter(
        statuses=(status,) if status else (),
        types=(event_type,) if event_type else (),
        destination=destination or None,
        since=since,
        until=until,
        person=person or None,
    )
    return Chosen(filters, {name: value for name, value in params.items() if value})


def _time(params: dict[str, str], name: str) -> datetime | None:
    """A date or a date and time, in UTC unless it says otherwise."""
    text = params[name]
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        abort(400, f"{FILTER_LABELS[name]}: not a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM), in UTC.")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _cursor(values: Mapping[str, str], name: str) -> int | None:
    text = values.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_EVENT_ID + 1:
        abort(400, f"Bad paging cursor: {name} must be an event id.")
    return int(text)


def _force(values: Mapping[str, str]) -> bool:
    return values.get("force") == "1"


def _when(iso: str | None) -> str:
    """An ISO time as the pages show it: to the second, UTC (every stored time is)."""
    return f"{iso[:10]} {iso[11:19]}" if iso else "–"
