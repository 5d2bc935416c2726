"""/_sandbox: inspect the vendors' state and flip the switches (latency, limits, faults)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from sandbox.gate import state

bp = Blueprint("sandbox_control", __name__, url_prefix="/_sandbox")


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


@bp.post("/config")
def configure():
    changes = request.get_json(silent=True)
    if not isinstance(changes, dict):
        return jsonify(error="body must be a JSON object"), 400
    unknown = set(changes) - {"latency_ms", "rate_limit", "faults"}
    if unknown:
        return jsonify(error=f"unknown settings: {', '.join(sorted(unknown))}"), 400
    state().configure(changes)
    return jsonify(status="configured")
