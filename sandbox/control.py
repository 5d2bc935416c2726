"""/_sandbox: inspect what the vendors hold, flip the switches (latency, rate limits, faults,
visibility delays, idempotency TTL), seed SparkLoop subscribers, and do what Spruce's staff do in
its app but its API cannot: delete a conversation, merge a contact into another. JSON, no auth, loopback
clients only. The same operations are methods of RunningSandbox; both go through SandboxState."""

from __future__ import annotations

import copy
import ipaddress

from flask import Blueprint, jsonify, request

from sandbox import sparkloop
from sandbox import spruce_records as records
from sandbox.gate import Rejected, state

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


@bp.delete("/spruce/conversations/<spruce_id:conversation_id>")
def delete_spruce_conversation(conversation_id: str):
    """A conversation a staff member deleted: gone with its items."""
    sandbox = state()
    with sandbox.lock:
        if conversation_id not in sandbox.conversations:
            raise Rejected(404, "conversation not found")
        records.delete_conversation(sandbox.conversations, sandbox.items, conversation_id)
    return jsonify(deleted=conversation_id)


@bp.post("/spruce/contacts/<spruce_id:contact_id>/merge")
def merge_spruce_contact(contact_id: str):
    """{"into": "entity_…"}: the contact is gone; its emails, numbers and conversations now
    belong to the other one, which is returned."""
    body = request.get_json(force=True, silent=True)
    into = body.get("into") if isinstance(body, dict) else None
    if not isinstance(into, str) or not into:
        raise Rejected(400, 'body must be {"into": "<contact id>"}')
    sandbox = state()
    with sandbox.lock:
        if contact_id not in sandbox.contacts or into not in sandbox.contacts:
            raise Rejected(404, "contact not found")
        merged = records.merge_contact(sandbox.contacts, sandbox.conversations, contact_id, into)
        return jsonify(contact=copy.deepcopy(merged))


def _is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback
