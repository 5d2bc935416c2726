"""Sprig's /v2/users, as documented: API-Key auth (403 without a body), upsert 202, read."""
from __future__ import annotations

import time
import uuid

from flask import Blueprint, Response, jsonify, request

from sandbox.gate import install_gate, state

bp = Blueprint("sprig", __name__, url_prefix="/sprig")
MAX_ATTRIBUTE_VALUES = 100


def _credential() -> str | None:
    expected = f"API-Key {state().settings.sprig_api_key}"
    return "sprig" if request.headers.get("Authorization") == expected else None


def _error(status: int, _type: str, message: str) -> Response:
    if status == 403:
        return Response(status=403)  # Sprig: "There is no message with this status code."
    if status == 400:
        return jsonify(error=message), 400
    return Response(status=status)


install_gate(bp, "sprig", _credential, _error, rate_headers=False)


@bp.post("/v2/users")
def upsert_user():
    body = request.get_json(silent=True)
    problem = _problem(body)
    if problem:
        return jsonify(error=problem), 400
    now_ms = int(time.time() * 1000)
    sandbox = state()
    with sandbox.lock:
        user = sandbox.sprig_users.setdefault(body["userId"], {
            "id": str(uuid.uuid4()), "createdAt": now_ms, "attributes": {}, "events": {}})
        if body.get("emailAddress"):
            user["emailAddress"] = body["emailAddress"]
        user["attributes"].update(body.get("attributes") or {})
        for item in body.get("events") or []:
            # Sprig counts every posted occurrence: a repeated request counts again.
            event = user["events"].setdefault(item["event"], {
                "event": item["event"], "count": 0, "createdAt": item["timestamp"]})
            event["count"] += 1
            event["updatedAt"] = item["timestamp"]
    return Response("", status=202, mimetype="text/plain")


@bp.get("/v2/users/<user_id>")
def get_user(user_id: str):
    sandbox = state()
    with sandbox.lock:
        user = sandbox.sprig_users.get(user_id)
        if user is None:
            return Response(status=404)
        return jsonify(id=user["id"], externalUserId=user_id, createdAt=user["createdAt"],
                       attributes=dict(user["attributes"]), events=list(user["events"].values()))


def _problem(body) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("userId"), str) or not body["userId"]:
        return "userId is required"
    if "emailAddress" in body and not isinstance(body["emailAddress"], str):
        return "emailAddress must be a string"
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, dict):
        return "attributes must be an object"
    if len(attributes) > MAX_ATTRIBUTE_VALUES:
        return "Attributes limited to total of 100 values"
    if any(not isinstance(v, (str, int, bool)) for v in attributes.values()):
        return "attribute values must be strings, numbers or booleans"
    events = body.get("events") or []
    if not isinstance(events, list):
        return "events must be an array"
    for item in events:
        if not isinstance(item, dict) or not isinstance(item.get("event"), str):
            return "each event needs an event name"
        stamp = item.get("timestamp")
        if not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 10**11:
            return "event timestamp must be Unix time in milliseconds"
    return None
