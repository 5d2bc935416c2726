"""POST /webhooks/sparkloop: check the token, parse, store, answer 200, then enqueue."""
from __future__ import annotations

import hmac
import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import RequestEntityTooLarge

from relay import storable
from relay.db import session_scope
from relay.queue import enqueue_deliveries
from web.ingest import ingest

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("relay.webhooks")


@bp.post("/webhooks/sparkloop")
def receive_sparkloop():
    config = current_app.config["RELAY"]
    if not _token_matches(request.headers.get("SparkLoop-Token", ""), config.webhook_tokens):
        log.warning("webhook rejected: missing or wrong SparkLoop-Token")
        return _error(401, "missing or invalid SparkLoop-Token header")

    raw_body = request.get_data(cache=False)
    try:
        payload = storable.loads(raw_body)
    except storable.NotStorable as refused:
        return jsonify(error=refused.message, fields=refused.fields), 400
    if not isinstance(payload, dict):
        return jsonify(error="request body must be a JSON object",
                       fields={"_body": ["Not a JSON object."]}), 400

    try:
        with session_scope() as session:
            result = ingest(session, payload, raw_body, config)
    except (OperationalError, InterfaceError) as exc:
        log.error("database unavailable, webhook refused with 503 (%s)", type(exc).__name__)
        return _error(503, "database unavailable, please retry")

    if result.errors is not None:  # the same answer for the same invalid payload, every time
        log.info("event %s %s as invalid", result.event_id, "was stored" if result.duplicate else "stored")
        return jsonify(error="payload failed validation", event_id=result.event_id,
                       fields=result.errors), 400
    if result.duplicate:
        log.info("duplicate webhook ignored")
        return "", 200
    log.info("event %s stored as %s", result.event_id, result.status)
    enqueue_deliveries(result.delivery_ids)
    return "", 200


@bp.app_errorhandler(RequestEntityTooLarge)
def body_too_large(_exc):
    limit = current_app.config["RELAY"].max_body_bytes
    return _error(413, f"request body exceeds the {limit} byte limit")


def _token_matches(given: str, tokens: tuple[str, ...]) -> bool:
    given_bytes = given.encode()
    # Compare against every token (no early exit) so timing reveals neither token nor position.
    matches = [hmac.compare_digest(given_bytes, token.encode()) for token in tokens]
    return bool(given) and any(matches)


def _error(status: int, message: str):
    return jsonify(error=message), status
