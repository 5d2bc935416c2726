"""SparkLoop's API v2 subscribers and webhooks (SparkLoop API: https://docs.sparkloop.app,
https://docs.sparkloop.app/api-v2/endpoints/subscribers,
https://docs.sparkloop.app/api-v2/endpoints/webhooks): `X-Api-Key` auth answered 401
`{"error": …}`, `page`/`per_page` paging (default 50, max 200), newest `created_at` first, a
`meta` block, 429 without headers (none are documented). Relay reads subscribers for `relay
backfill` (seeded through the control API, because Relay never creates them) and manages its
webhook with `relay sparkloop webhooks`."""

from __future__ import annotations

import copy
import math
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from sandbox.gate import Rejected, Vendor, state
from sandbox.state import SandboxSettings, SandboxState

PREFIX = "/sparkloop/v2"
bp = Blueprint("sparkloop", __name__, url_prefix=PREFIX)

DEFAULT_PER_PAGE, MAX_PER_PAGE = 50, 200
LIST_TYPES = ("all", "referrals", "advocates")
REFERRAL_STATUSES = ("verified", "pending", "rejected")
# The Subscriber Object (https://docs.sparkloop.app/api-v2/objects-schema/subscriber-object), with
# what a seeded subscriber gets when a field is left out.
DEFAULTS: dict[str, Any] = {
    "name": None,
    "referrer_code": None,
    "referral_status": "verified",
    "ip_address": None,
    "user_agent": None,
    "origin": "signup",
    "utm_source": None,
    "utm_campaign": None,
}
OPTIONAL_FIELDS = {"country_code", "cpa"}
# The documented order, kept in answers for readability.
FIELDS = (
    "uuid",
    "email",
    "name",
    "ref_code",
    "referrer_code",
    "referred",
    "referral_status",
    "ip_address",
    "user_agent",
    "origin",
    "country_code",
    "cpa",
    "utm_source",
    "utm_campaign",
    "created_at",
)


def error(status: int, _error_type: str, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def refuse(settings: SandboxSettings) -> Response | None:
    key = request.headers.get("X-Api-Key")
    if not key:
        return error(401, "unauthorized", "API key is missing!")
    if key != settings.sparkloop_api_key:
        # "User not found!" is documented (https://docs.sparkloop.app/api-v2/endpoints/campaigns);
        # that it answers a key matching no account is inferred.
        return error(401, "unauthorized", "User not found!")
    return None


VENDOR = Vendor(
    name="sparkloop",
    prefix=PREFIX,
    authorization=None,
    refuse=refuse,
    error=error,
    throttle_headers=lambda _seconds: {},
    response_headers=lambda _request_id, _window: {},
)


@bp.get("/subscribers")
def list_subscribers():
    page = _int_arg("page", default=1)
    per_page = _int_arg("per_page", default=DEFAULT_PER_PAGE, maximum=MAX_PER_PAGE)
    kind = request.args.get("type", "all")
    if kind not in LIST_TYPES:
        raise Rejected(400, f"type must be one of {', '.join(LIST_TYPES)}")
    rows = state().sparkloop_newest_first()
    if kind == "referrals":
        rows = [row for row in rows if row["referred"]]
    elif kind == "advocates":
        codes = {row["referrer_code"] for row in rows if row["referrer_code"]}
        rows = [row for row in rows if row["ref_code"] in codes]
    start = (page - 1) * per_page
    return jsonify(
        subscribers=rows[start : start + per_page],
        meta={
            "per_page": per_page,
            "page": page,
            "total_pages": math.ceil(len(rows) / per_page),
            "total_subscribers": len(rows),
        },
    )


@bp.get("/subscribers/<path:identifier>")
def get_subscriber(identifier: str):
    """By uuid or email address (https://docs.sparkloop.app/api-v2/endpoints/subscribers)."""
    wanted = identifier.strip().lower()
    for row in state().sparkloop_newest_first():
        if row["uuid"] == identifier or row["email"].lower() == wanted:
            return jsonify(subscriber=row)
    raise Rejected(404, "Subscriber not found!")


# --- webhooks ----------------------------------------------------------------------------------

# The four events the API can switch; the other three are chosen in the dashboard only
# (https://docs.sparkloop.app/api-v2/endpoints/webhooks).
WEBHOOK_EVENTS = ("new_referral", "reward_unlocked", "new_partner_referral", "reward_redeemed")


@bp.post("/webhooks")
def create_webhook():
    body = _webhook_body()
    if "url" not in body:
        raise Rejected(400, "Url can't be blank")
    sandbox = state()
    with sandbox.lock:
        webhook = {
            "uuid": f"webhook_{secrets.token_hex(5)}",
            "url": body["url"],
            "events": {name: body.get(name) for name in WEBHOOK_EVENTS},
        }
        sandbox.sparkloop_webhooks[webhook["uuid"]] = webhook
        return jsonify(webhook=copy.deepcopy(webhook)), 201


@bp.get("/webhooks")
def list_webhooks():
    """Newest first, as documented."""
    sandbox = state()
    with sandbox.lock:
        return jsonify(webhooks=copy.deepcopy(list(reversed(sandbox.sparkloop_webhooks.values()))))


@bp.get("/webhooks/<identifier>")
def get_webhook(identifier: str):
    with state().lock:
        return jsonify(webhook=copy.deepcopy(_webhook(identifier)))


@bp.put("/webhooks/<identifier>")
def update_webhook(identifier: str):
    body = _webhook_body()
    with state().lock:
        webhook = _webhook(identifier)
        webhook["url"] = body.get("url", webhook["url"])
        webhook["events"].update({name: body[name] for name in WEBHOOK_EVENTS if name in body})
        return jsonify(webhook=copy.deepcopy(webhook))


@bp.delete("/webhooks/<identifier>")
def delete_webhook(identifier: str):
    # SparkLoop documents no answer body for a delete; the removed webhook is inferred.
    sandbox = state()
    with sandbox.lock:
        webhook = _webhook(identifier)
        del sandbox.sparkloop_webhooks[webhook["uuid"]]
        return jsonify(webhook=copy.deepcopy(webhook))


def _webhook(identifier: str) -> dict:
    """Call with the state's lock held."""
    webhook = state().sparkloop_webhooks.get(identifier)
    if webhook is None:
        raise Rejected(404, f"Webhook {identifier} not found!")  # worded as campaigns' 404 (inferred)
    return webhook


def _webhook_body() -> dict:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise Rejected(400, "the body must be a JSON object")
    unknown = set(body) - {"url", *WEBHOOK_EVENTS}
    if unknown:
        raise Rejected(400, f"unknown fields: {', '.join(sorted(unknown))}")
    if "url" in body:
        if not isinstance(body["url"], str) or not body["url"].strip():
            raise Rejected(400, "Url can't be blank")
        if not body["url"].startswith("https://"):
            raise Rejected(400, "Url must start with https://")  # documented wording
    for name in WEBHOOK_EVENTS:
        # Two flags are typed "String" in the docs, probably a slip: the sandbox wants booleans.
        if name in body and not isinstance(body[name], bool):
            raise Rejected(400, f"{name} must be true or false")
    return body


def _int_arg(name: str, default: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    bound = f" and at most {maximum}" if maximum else ""
    try:
        value = int(raw)
    except ValueError:
        raise Rejected(400, f"{name} must be a whole number of at least 1{bound}") from None
    if value < 1 or (maximum is not None and value > maximum):
        raise Rejected(400, f"{name} must be a whole number of at least 1{bound}")
    return value


# --- seeding (control API and RunningSandbox) ----------------------------------------------


def add_subscribers(sandbox: SandboxState, items: Any) -> list[dict]:
    """Add Subscriber Objects; every field but `email` may be left out. All or nothing: raises
    ValueError, adding none, if any item is invalid or its uuid or email is already taken."""
    if not isinstance(items, list):
        raise ValueError("subscribers must be a list of objects")
    with sandbox.lock:
        taken_ids = set(sandbox.sparkloop_subscribers)
        taken_emails = {row["email"].lower() for row in sandbox.sparkloop_subscribers.values()}
        records = []
        for n, item in enumerate(items):
            record = _record(item, f"subscribers[{n}]")
            if record["uuid"] in taken_ids or record["email"].lower() in taken_emails:
                raise ValueError(f"subscribers[{n}]: uuid or email already taken")
            taken_ids.add(record["uuid"])
            taken_emails.add(record["email"].lower())
            records.append(record)
        for record in records:
            sandbox.sparkloop_subscribers[record["uuid"]] = record
        return [dict(record) for record in records]


def _record(item: Any, where: str) -> dict:
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object")
    unknown = set(item) - set(FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
    email = item.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise ValueError(f"{where}.email must be an email address")
    uuid = item.get("uuid") or f"sub_{secrets.token_hex(5)}"
    if not isinstance(uuid, str):
        raise ValueError(f"{where}.uuid must be a string")
    status = item.get("referral_status", DEFAULTS["referral_status"])
    if status not in REFERRAL_STATUSES:
        raise ValueError(f"{where}.referral_status must be one of {', '.join(REFERRAL_STATUSES)}")
    record = {"uuid": uuid, "email": email, "ref_code": item.get("ref_code") or secrets.token_hex(4)}
    record |= {name: item.get(name, default) for name, default in DEFAULTS.items()}
    record["referred"] = bool(item.get("referred", record["referrer_code"] is not None))
    record |= {name: item[name] for name in OPTIONAL_FIELDS if name in item}
    record["created_at"] = _iso_time(item.get("created_at"), f"{where}.created_at")
    return {name: record[name] for name in FIELDS if name in record}


def _iso_time(value: Any, where: str) -> str:
    """ISO-8601 in UTC with milliseconds, as the API writes it ("2021-03-24T11:55:02.113Z");
    a time without a zone is UTC; none at all is now."""
    if value is None:
        moment = datetime.now(UTC)
    else:
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be an ISO-8601 date and time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
