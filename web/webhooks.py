"""POST /webhooks/sparkloop: check the token, parse, store, answer 200 (the workers publish what
was stored: workers.dispatch). Every answer is counted (relay_webhooks_total{type,outcome}) and
logged once, with the event's id, type and outcome and the time it took: never a payload value."""

from __future__ import annotations

import hmac
import logging
import time

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import RequestEntityTooLarge

from relay import storable
from relay.ingest import ingest_webhook
from relay.models import EventStatus
from relay.runtime import Runtime
from schemas.events import EVENTS

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("relay.webhooks")


@bp.post("/webhooks/sparkloop")
def receive_sparkloop():
    started = time.monotonic()
    runtime = Runtime.of(current_app)
    config = runtime.config
    if not _token_matches(request.headers.get("SparkLoop-Token", ""), config.webhook_tokens):
        return _answer(started, "unauthorized", None, None, 401, error="missing or invalid SparkLoop-Token header")

    raw_body = request.get_data(cache=False)
    try:
        payload = storable.loads(raw_body)
    except storable.NotStorable as refused:
        return _answer(started, "bad_request", None, None, 400, error=refused.message, fields=refused.fields)
    if not isinstance(payload, dict):
        return _answer(
            started,
            "bad_request",
            None,
            None,
            400,
            error="request body must be a JSON object",
            fields={"_body": ["Not a JSON object."]},
        )

    try:
        result = _ingest(runtime, payload, raw_body)
    except (OperationalError, InterfaceError) as exc:
        log.error("database unavailable (%s)", type(exc).__name__)
        return _answer(started, "unavailable", payload, None, 503, error="database unavailable, please retry")

    if result.errors is not None:  # the same answer for the same invalid payload, every time
        return _answer(
            started,
            "invalid",
            payload,
            result.event_id,
            400,
            error="payload failed validation",
            event_id=result.event_id,
            fields=result.errors,
        )
    if result.duplicate:
        return _answer(started, "duplicate", payload, result.event_id, 200)
    # Stored is all: the workers' dispatcher (workers.dispatch) publishes the deliveries.
    outcome = "unhandled" if result.status == EventStatus.UNHANDLED else "accepted"
    return _answer(started, outcome, payload, result.event_id, 200)


def _ingest(runtime: Runtime, payload: dict, raw_body: bytes):
    """The intake's pool skips the pre-ping round trip: a connection a PostgreSQL restart broke
    fails its first statement, which SQLAlchemy reports as invalidated (and refreshes the pool),
    so that one is tried once more on a new connection before answering 503."""
    try:
        return ingest_webhook(runtime.db, payload, raw_body, runtime.config)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return ingest_webhook(runtime.db, payload, raw_body, runtime.config)


@bp.app_errorhandler(RequestEntityTooLarge)
def body_too_large(_exc):
    limit = current_app.config["RELAY"].max_body_bytes
    return _answer(time.monotonic(), "too_large", None, None, 413, error=f"request body exceeds the {limit} byte limit")


def _answer(started: float, outcome: str, payload: dict | None, stored_id: int | None, status: int, **body):
    event_type = payload.get("type") if isinstance(payload, dict) else None
    # Bounded: no label a sender makes up.
    type_label = event_type if isinstance(event_type, str) and event_type in EVENTS else "unknown"
    Runtime.of(current_app).metrics.count("relay_webhooks_total", type=type_label, outcome=outcome)
    level = logging.WARNING if status == 401 else logging.INFO
    log.log(
        level,
        "webhook %s: %s",
        outcome,
        status,
        extra={
            "event_id": stored_id,
            "event_type": type_label,
            "outcome": outcome,
            "http_status": status,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    return (jsonify(**body), status) if body else ("", status)


def _token_matches(given: str, tokens: tuple[str, ...]) -> bool:
    given_bytes = given.encode()
    # Compare against every token (no early exit) so timing reveals neither token nor position.
    matches = [hmac.compare_digest(given_bytes, token.encode()) for token in tokens]
    return bool(given) and any(matches)
