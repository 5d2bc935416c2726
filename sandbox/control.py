"""/_sandbox: inspect what the vendors hold, flip the switches (latency, rate limits, faults,
visibility delays, idempotency TTL) and seed SparkLoop subscribers. JSON, no auth, loopback
clients only. The same operations are methods of RunningSandbox; both go through SandboxState."""
from __future__ import annotations

import ipaddress

from flask import Blueprint, jsonify, request

from sandbox import sparkloop
from sandbox.gate import state

bp = Blueprint("sandbox_control", __name__, url_prefix="/_sandbox")


@bp.before_request
def loopback_only():
    if not _is_loopback(request.remote_addr):
        return jsonify(error="the sandbox control API answers loopback clients only"), 403
    return None


@bp.get("/state")
def get_state():
    return jsonify(state().snapshot())


@bp.get("/stats")
def get_stats():
    return jsonify(state().stats())


@bp.post("/reset")
def reset():
    state().reset()
    return jsonify(status="reset")


@bp.get("/config")
def get_config():
    return jsonify(state().config())


@bp.post("/config")
def configure():
    changes = request.get_json(force=True, silent=True)
    try:
        return jsonify(state().configure(changes))
    except ValueError as exc:
        return jsonify(error=str(exc)), 400


@bp.post("/sparkloop/subscribers")
def add_sparkloop_subscribers():
    """A list of Subscriber Objects, or {"subscribers": [...]}; every field but email optional."""
    body = request.get_json(force=True, silent=True)
    items = body.get("subscribers") if isinstance(body, dict) else body
    try:
        return jsonify(subscribers=sparkloop.add_subscribers(state(), items)), 201
    except ValueError as exc:
        return jsonify(error=str(exc)), 400


def _is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback
