"""Sprig's /v2/users (Sprig API: https://docs.sprig.com/reference/sprig-api/v2/post-user-v2-1,
https://docs.sprig.com/reference/sprig-api/v2/get-v2-users-userid-1): `API-Key` auth with a
body-less 403, upsert answered 202 with an empty body, read-back as Userv2 with per-event counts,
429 with `ratelimit-reset`.

And /v2/purge/visitors (https://docs.sprig.com/reference/sprig-api/v2/post-v2-purge-visitors-1):
`Bearer` auth, as Sprig documents it for this path only; at most 100 emails, userIds and
visitorIds together, at least one; answered 200 `{"requestId"}`. The purge runs `delaySeconds`
after submission (10 days when not given): the sandbox then deletes every visitor the request
names, as they are at that moment (inferred: Sprig does not say whether a visitor upserted
after the request is purged too), at the first Sprig request after it is due. The jobs are in
the state under `sprig.purges`."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request

from sandbox.gate import Rejected, Vendor, state

PREFIX = "/sprig"
bp = Blueprint("sprig", __name__, url_prefix=PREFIX)

MAX_ATTRIBUTE_VALUES = 100
# Event timestamps are Unix milliseconds (https://docs.sprig.com/reference/sprig-api/v2/post-user-v2-1).
MIN_MILLISECONDS = 10**11  # smaller integers look like Unix seconds
UPSERT_FIELDS = {"userId", "emailAddress", "attributes", "events"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PURGE_PATH = "/v2/purge/visitors"
PURGE_FIELDS = ("emails", "userIds", "visitorIds")
MAX_PURGED_VISITORS = 100
DEFAULT_PURGE_DELAY_S = 10 * 86400


def error(status: int, _error_type: str, message: str) -> Response:
    if status == 400:
        response = jsonify(error=message)
        response.status_code = 400
        return response
    # Sprig documents no body for any other error; 403 says "There is no message".
    return Response(status=status)


def refuse(settings) -> Response | None:
    """The one accepted Authorization header: `Bearer <key>` for the purge, `API-Key <key>`
    elsewhere (https://docs.sprig.com/docs/apis and the OpenAPI's per-operation headers)."""
    scheme = "Bearer" if request.path == PREFIX + PURGE_PATH else "API-Key"
    if request.headers.get("Authorization") != f"{scheme} {settings.sprig_api_key}":
        return error(403, "forbidden", "invalid or disabled credentials")
    return None


VENDOR = Vendor(
    name="sprig",
    prefix=PREFIX,
    authorization=None,
    refuse=refuse,
    error=error,
    # Sprig documents no throttle headers (its OpenAPI: https://docs.sprig.com/reference/sprig-api.json);
    # its own web SDK reads `ratelimit-reset` (seen in the SDK's code, not documented).
    throttle_headers=lambda seconds: {"ratelimit-reset": str(seconds), "Retry-After": str(seconds)},
    response_headers=lambda _request_id, _window: {},
)


@bp.before_request
def run_due_purges():
    sandbox = state()
    with sandbox.lock:
        for job in sandbox.sprig_purges:
            if not job["done"] and job["purgeAt"] <= time.time():
                _purge(sandbox, job)


def _purge(sandbox, job: dict) -> None:
    gone = [
        user_id
        for user_id, user in sandbox.sprig_users.items()
        if user_id in job["userIds"]
        or user["id"] in job["visitorIds"]
        or (user.get("emailAddress") or "").lower() in {e.lower() for e in job["emails"]}
    ]
    for user_id in gone:
        del sandbox.sprig_users[user_id]
    job["done"], job["purged"] = True, len(gone)


@bp.post(PURGE_PATH)
def purge_visitors():
    body = request.get_json(force=True, silent=True)
    _validate_purge(body)
    delay_s = body.get("delaySeconds", DEFAULT_PURGE_DELAY_S)
    job = {
        "requestId": str(uuid.uuid4()),
        **{name: list(body.get(name) or []) for name in PURGE_FIELDS},
        "delaySeconds": delay_s,
        "submittedAt": time.time(),
        "purgeAt": time.time() + delay_s,
        "done": False,
        "purged": None,
    }
    sandbox = state()
    with sandbox.lock:
        sandbox.sprig_purges.append(job)
        if delay_s == 0:
            _purge(sandbox, job)
    return jsonify(requestId=job["requestId"])


@bp.post("/v2/users")
def upsert_user():
    body = request.get_json(force=True, silent=True)
    _validate(body)
    now_ms = int(time.time() * 1000)
    sandbox = state()
    with sandbox.lock:
        user = sandbox.sprig_users.get(body["userId"])
        if user is None:
            user = {"id": str(uuid.uuid4()), "createdAt": now_ms, "attributes": {}, "events": {}}
            sandbox.sprig_users[body["userId"]] = user
            sandbox.hide_for_a_while(body["userId"], "sprig_users")  # processed asynchronously
        if "emailAddress" in body:
            user["emailAddress"] = body["emailAddress"]
        user["attributes"].update(body.get("attributes") or {})
        for occurrence in body.get("events") or []:
            # Every posted occurrence counts, a retried request again: inferred from the per-event
            # `count` (https://docs.sprig.com/reference/sprig-api/v2/get-v2-users-userid-1).
            name, stamp = occurrence["event"], occurrence["timestamp"]
            event = user["events"].setdefault(name, {"event": name, "count": 0, "createdAt": stamp, "updatedAt": stamp})
            event["count"] += 1
            event["createdAt"] = min(event["createdAt"], stamp)
            event["updatedAt"] = max(event["updatedAt"], stamp)
    return Response("", status=202, mimetype="text/plain")


@bp.get("/v2/users/<path:user_id>")
def get_user(user_id: str):
    sandbox = state()
    with sandbox.lock:
        user = sandbox.sprig_users.get(user_id)
        if user is None or not sandbox.visible(user_id, "sprig_users"):
            return Response(status=404)
        userv2 = {
            "id": user["id"],
            "externalUserId": user_id,
            "createdAt": user["createdAt"],
            "attributes": dict(user["attributes"]),
            "events": [dict(event) for event in user["events"].values()],
        }
    return jsonify(userv2)


def _validate(body: Any) -> None:
    if not isinstance(body, dict):
        raise Rejected(400, "body must be a JSON object")
    unknown = set(body) - UPSERT_FIELDS
    if unknown:
        # Stricter than Sprig may be, on purpose: `email` instead of `emailAddress` (Sprig API:
        # https://docs.sprig.com/reference/sprig-api/v2/post-user-v2-1) would otherwise be dropped
        # without a trace.
        raise Rejected(400, f"unknown fields: {', '.join(sorted(unknown))}")
    if not isinstance(body.get("userId"), str) or not body["userId"].strip():
        raise Rejected(400, "userId is required and must be a non-empty string")
    if "emailAddress" in body and not (isinstance(body["emailAddress"], str) and _EMAIL.match(body["emailAddress"])):
        raise Rejected(400, "emailAddress must be a valid email address")
    _validate_attributes(body.get("attributes"))
    _validate_events(body.get("events"))


def _validate_purge(body: Any) -> None:
    if not isinstance(body, dict):
        raise Rejected(400, "body must be a JSON object")
    unknown = set(body) - {"delaySeconds", *PURGE_FIELDS}
    if unknown:
        raise Rejected(400, f"unknown fields: {', '.join(sorted(unknown))}")
    delay = body.get("delaySeconds", 0)
    if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
        raise Rejected(400, "delaySeconds must be a non-negative integer")
    for name in PURGE_FIELDS:
        values = body.get(name)
        if values is not None and not (
            isinstance(values, list) and all(isinstance(v, str) and v.strip() for v in values)
        ):
            raise Rejected(400, f"{name} must be an array of non-empty strings")
    count = sum(len(body.get(name) or []) for name in PURGE_FIELDS)
    if not count:
        raise Rejected(400, "at least one of emails, userIds or visitorIds must be non-empty")
    if count > MAX_PURGED_VISITORS:
        raise Rejected(400, f"limited to {MAX_PURGED_VISITORS} visitor deletions per request")


def _validate_attributes(attributes: Any) -> None:
    if attributes is None:
        return
    if not isinstance(attributes, dict):
        raise Rejected(400, "attributes must be an object")
    if len(attributes) > MAX_ATTRIBUTE_VALUES:
        raise Rejected(400, f"Attributes limited to total of {MAX_ATTRIBUTE_VALUES} values")
    for name, value in attributes.items():
        if not name:
            raise Rejected(400, "attribute names must be non-empty")
        if not isinstance(value, (str, int, bool)):
            raise Rejected(400, f"attribute values must be strings, integers or booleans ({name!r})")


def _validate_events(events: Any) -> None:
    if events is None:
        return
    if not isinstance(events, list):
        raise Rejected(400, "events must be an array")
    for n, occurrence in enumerate(events):
        if not isinstance(occurrence, dict) or set(occurrence) - {"event", "timestamp"}:
            raise Rejected(400, f"events[{n}] must be {{event, timestamp}} (no event properties)")
        if not isinstance(occurrence.get("event"), str) or not occurrence["event"]:
            raise Rejected(400, f"events[{n}].event must be a non-empty string")
        stamp = occurrence.get("timestamp")
        if not isinstance(stamp, int) or isinstance(stamp, bool) or stamp <= MIN_MILLISECONDS:
            raise Rejected(400, f"events[{n}].timestamp must be Unix time in milliseconds")
