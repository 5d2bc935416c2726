"""Audit log: who did what, newest first, filtered by person and action, paged by entry id
(operations.audit). Viewers see it too: an entry holds ids, digests and account emails only."""

from __future__ import annotations

from flask import abort, render_template, request

from operations.audit import ACTIONS, GROUPS, AuditFilter, any_entry, list_entries
from web.console.blueprint import bp, runtime

PAGE_SIZE = 50
# Of a long list of ids, a row shows this many and counts the rest.
IDS_SHOWN = 10
MAX_PERSON_LENGTH = 254  # an account's email at most
MAX_ID = 2**63 - 1


@bp.get("/audit")
def audit_log():
    filters = AuditFilter(actor=_person(), action=_action())
    before, after = _entry_id("before"), _entry_id("after")
    if before is not None and after is not None:
        abort(400, "Give either before or after (a page of older or of newer entries), not both.")
    # One more than a page: whether there is a further page in the direction of travel.
    entries = list_entries(runtime(), filters, PAGE_SIZE + 1, before=before, after=after)
    further = len(entries) > PAGE_SIZE
    entries = entries[1:] if after is not None and further else entries[:PAGE_SIZE]
    older = newer = None
    if entries:
        newest, oldest = entries[0]["id"], entries[-1]["id"]
        has_older = further if after is None else any_entry(runtime(), filters, before=oldest)
        has_newer = further if after is not None else before is not None and any_entry(runtime(), filters, after=newest)
        older, newer = (oldest if has_older else None), (newest if has_newer else None)
    return render_template(
        "console/audit_log.html",
        rows=[_row(entry) for entry in entries],
        person=filters.actor or "",
        action=filters.action or "",
        groups=GROUPS,
        actions=ACTIONS,
        older=older,
        newer=newer,
        paged=before is not None or after is not None,
    )


def _person() -> str | None:
    person = request.args.get("person", "").strip()
    if len(person) > MAX_PERSON_LENGTH:
        abort(400, f"Person is too long: at most {MAX_PERSON_LENGTH} characters (an account's email or a name).")
    return person or None


def _action() -> str | None:
    action = request.args.get("action", "").strip()
    if action and action not in ACTIONS and action not in GROUPS:
        abort(400, "Unknown action: choose one from the Action list (an action, or a group such as events).")
    return action or None


def _entry_id(name: str) -> int | None:
    text = request.args.get(name, "").strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_ID:
        abort(400, f"{name} must be an audit entry's id: a whole number above 0.")
    return int(text)


def _row(entry: dict) -> dict:
    """An entry as the table shows it: its time to the second, its ids (the first few) and the
    rest of its targets and details as short text."""
    targets = []
    for kind, value in entry["targets"].items():
        if isinstance(value, list):
            total = entry["details"].get(f"{kind}_total", len(value))
            shown = value[:IDS_SHOWN]
            targets.append({"kind": kind, "ids": shown, "more": total - len(shown)})
        else:
            targets.append({"kind": kind, "value": str(value)})
    details = ", ".join(
        f"{key} {_flag(value)}"
        for key, value in entry["details"].items()
        if not key.endswith("_total") and value is not None
    )
    return entry | {"when": entry["at"][:19].replace("T", " "), "target_list": targets, "details_text": details}


def _flag(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
