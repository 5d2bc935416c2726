"""Liveness (/healthz) and readiness (/readyz: the database and the broker answer)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from relay.runtime import Runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    checks = {"database": _check(Runtime.of(current_app).db.ping), "broker": _check(_ping_broker)}
    ready = all(result == "ok" for result in checks.values())
    return jsonify(status="ready" if ready else "unavailable", checks=checks), 200 if ready else 503


def _ping_broker() -> None:
    with current_app.extensions["celery"].connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def _check(probe) -> str:
    try:
        probe()
    except Exception as exc:  # a readiness probe reports every failure, whatever its kind
        # The class name says what failed without echoing URLs that may carry passwords.
        return f"unreachable ({type(exc).__name__})"
    return "ok"
