"""Spruce's contacts, note conversations and messages, as documented: Bearer auth, camelCase,
pageSize/paginationToken paging, s-idempotency-key with 422 on a repeat, s-ratelimit-* headers,
and {"statusCode", "type", "message"} errors."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

from flask import Blueprint, Response, g, jsonify, request

from sandbox.gate import install_gate, state

bp = Blueprint("spruce", __name__, url_prefix="/spruce/v1")
APP = "https://app.sprucehealth.com/org/entity_sandbox"


def _credential() -> str | None:
    expected = f"Bearer {state().settings.spruce_api_token}"
    return "spruce-org" if request.headers.get("Authorization") == expected else None


def error(status: int, error_type: str, message: str) -> Response:
    response = jsonify(statusCode=status, type=error_type, message=message)
    response.status_code = status
    return response


install_gate(bp, "spruce", _credential, error, rate_headers=True)


@bp.errorhandler(404)
def not_found(_exc):
    return error(404, "NOT_FOUND", "not found")


@bp.errorhandler(405)
def not_allowed(_exc):
    return error(405, "METHOD_NOT_ALLOWED", "method not allowed")


@bp.before_request
def idempotency():
    key = request.headers.get("s-idempotency-key")
    if request.method not in ("POST", "PATCH") or key is None or request.path.endswith("/search"):
        return None
    if len(key) > 255:
        return error(400, "BAD_PARAMETER", "s-idempotency-key longer than 255 characters")
    if not state().claim_idempotency_key(g.credential, request.path, key):
        return error(422, "duplicate_request", "duplicate request")
    g.idempotency_key = key
    return None


@bp.after_request
def remember_key(response: Response) -> Response:
    # Only a request that succeeded burns its key; a failed one may be retried with it.
    if g.get("idempotency_key") and 200 <= response.status_code < 300:
        state().store_idempotency_key(g.credential, request.path, g.idempotency_key)
    return response


# --- contacts ---------------------------------------------------------------------------


@bp.post("/contacts")
def create_contact():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "BAD_PARAMETER", "body must be a JSON object")
    if not any(body.get(k) for k in ("givenName", "familyName", "phoneNumbers", "faxNumbers",
                                        "emailAddresses")):
        return error(400, "BAD_PARAMETER", "at least one of givenName, familyName, phoneNumbers, "
                                           "faxNumbers, emailAddresses is required")
    if body.get("category", "patient") not in ("patient", "professional"):
        return error(400, "BAD_PARAMETER", "category must be patient or professional")
    for list_field in ("emailAddresses", "phoneNumbers", "faxNumbers"):
        entries = body.get(list_field) or []
        if not isinstance(entries, list) or any(not isinstance(e, dict) or not e.get("value")
                                                 for e in entries):
            return error(400, "BAD_PARAMETER", f"{list_field} entries need a value")
    sandbox = state()
    contact_id = sandbox.next_id("entity")
    contact = _apply(_new_contact(contact_id), body)
    with sandbox.lock:
        sandbox.contacts[contact_id] = contact
    return jsonify(contact), 201


@bp.get("/contacts/<contact_id>")
def get_contact(contact_id: str):
    with state().lock:
        contact = state().contacts.get(contact_id)
        return jsonify(contact) if contact else error(404, "NOT_FOUND", "contact not found")


@bp.patch("/contacts/<contact_id>")
def update_contact(contact_id: str):
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "BAD_PARAMETER", "body must be a JSON object")
    with state().lock:
        contact = state().contacts.get(contact_id)
        if contact is None:
            return error(404, "NOT_FOUND", "contact not found")
        return jsonify(_apply(contact, body))


@bp.get("/contacts")
def list_contacts():
    with state().lock:
        contacts = list(state().contacts.values())
    return _page("contacts", contacts, max_size=500)


@bp.post("/contacts/search")
def search_contacts():
    body = request.get_json(silent=True) or {}
    structured = body.get("structured") or {}
    with state().lock:
        contacts = sorted(state().contacts.values(), key=lambda c: c["id"])
    for flt in structured.get("emailAddressFilter") or []:
        wanted = {v.lower() for v in flt.get("values", [])}
        contacts = [c for c in contacts if _matches(flt.get("match"), wanted,
                                                    {e["value"].lower() for e in c["emailAddresses"]})]
    for flt in structured.get("phoneNumberFilter") or []:
        wanted = set(flt.get("values", []))
        contacts = [c for c in contacts if _matches(flt.get("match"), wanted,
                                                    {p["value"] for p in c["phoneNumbers"]})]
    if body.get("freeText"):
        text = body["freeText"].lower()
        contacts = [c for c in contacts if text in c["displayName"].lower()
                    or any(text in e["value"].lower() for e in c["emailAddresses"])]
    response = _page("contacts", contacts, max_size=500)
    if response.status_code == 200:
        payload = response.get_json() | {"totalCountRelation": "eq"}
        return jsonify(payload)
    return response


def _matches(mode: str | None, wanted: set, have: set) -> bool:
    if mode == "all":
        return wanted <= have
    if mode == "none":
        return not (wanted & have)
    return bool(wanted & have)


# --- conversations and notes ------------------------------------------------------------


@bp.post("/conversations")
def create_conversation():
    body = request.get_json(silent=True) or {}
    if body.get("type") != "note":
        return error(400, "BAD_PARAMETER", "the sandbox supports only note conversations")
    note = body.get("note") or {}
    sandbox = state()
    with sandbox.lock:
        unknown = [c for c in note.get("associatedContactIds") or [] if c not in sandbox.contacts]
    if unknown:
        return error(400, "BAD_PARAMETER", "unknown associated contact id")
    conversation_id = sandbox.next_id("t")
    conversation = {
        "id": conversation_id, "object": "conversation", "type": "note",
        "title": note.get("title") or "Note", "subtitle": "", "archived": False,
        "isReadOnly": False, "createdAt": _now(), "lastMessageAt": _now(),
        "associatedContactIds": list(note.get("associatedContactIds") or []),
        "internalMemberIds": list(note.get("memberIds") or []), "tags": [],
        "externalParticipants": [], "apiURL": f"{request.host_url}spruce/v1/conversations/{conversation_id}",
        "appURL": f"{APP}/thread/{conversation_id}",
    }
    with sandbox.lock:
        sandbox.conversations[conversation_id] = conversation
        sandbox.items[conversation_id] = []
    result = {"conversation": conversation}
    if note.get("message"):
        result["postMessageRequestId"] = _add_item(conversation_id, note["message"])
    return jsonify(result), 201


@bp.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str):
    with state().lock:
        conversation = state().conversations.get(conversation_id)
    if conversation is None:
        return error(404, "NOT_FOUND", "conversation not found")
    return jsonify(conversation=conversation)


@bp.get("/contacts/<contact_id>/conversations")
def contact_conversations(contact_id: str):
    with state().lock:
        if contact_id not in state().contacts:
            return error(404, "NOT_FOUND", "contact not found")
        found = [c for c in state().conversations.values() if contact_id in c["associatedContactIds"]]
    return jsonify(conversations=found)


@bp.post("/conversations/<conversation_id>/messages")
def post_message(conversation_id: str):
    body = request.get_json(silent=True) or {}
    with state().lock:
        conversation = state().conversations.get(conversation_id)
    if conversation is None:
        return error(404, "NOT_FOUND", "conversation not found")
    elements = body.get("body")
    if not isinstance(elements, list) or not elements or any(
            not isinstance(e, dict) or e.get("type") not in ("text", "page") for e in elements):
        return error(400, "BAD_PARAMETER", "body must be a non-empty list of text or page elements")
    if conversation["type"] == "note" and body.get("internal") is not True:
        return error(400, "BAD_PARAMETER", "note conversations require internal: true")
    return jsonify(requestId=_add_item(conversation_id, body))


@bp.get("/conversations/<conversation_id>/items")
def conversation_items(conversation_id: str):
    with state().lock:
        items = list(state().items.get(conversation_id, [])) if conversation_id in state().conversations else None
    if items is None:
        return error(404, "NOT_FOUND", "conversation not found")
    if request.args.get("order", "newest_first") == "newest_first":
        items.reverse()
    return _page("conversationItems", items, max_size=200)


def _add_item(conversation_id: str, message: dict) -> str:
    sandbox = state()
    request_id = sandbox.next_id("asyncRequest")
    item = {
        "id": sandbox.next_id("ti"), "object": "conversationItem", "conversationId": conversation_id,
        "createdAt": _now(), "modifiedAt": _now(), "direction": "none",
        "text": "\n".join(e.get("value", "") for e in message.get("body", []) if e.get("type") == "text"),
        "isInternalNote": bool(message.get("internal")), "requestId": request_id,
        "author": {"displayName": "Relay (API)"}, "attachments": [], "buttons": [], "pages": [],
    }
    with sandbox.lock:
        sandbox.items[conversation_id].append(item)
    return request_id


# --- helpers ----------------------------------------------------------------------------


def _page(name: str, records: list, max_size: int):
    try:
        size = int(request.args.get("pageSize", 50))
        offset = int(base64.urlsafe_b64decode(request.args["paginationToken"]).decode()) \
            if request.args.get("paginationToken") else 0
    except ValueError:
        return error(400, "BAD_PARAMETER", "invalid pageSize or paginationToken")
    if not 1 <= size <= max_size:
        return error(400, "BAD_PARAMETER", f"pageSize must be between 1 and {max_size}")
    page = records[offset:offset + size]
    result = {name: page, "hasMore": offset + size < len(records), "totalCount": len(records)}
    if result["hasMore"]:
        result["paginationToken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
    return jsonify(result)


def _new_contact(contact_id: str) -> dict:
    return {
        "id": contact_id, "object": "contact",
        "apiURL": f"{request.host_url}spruce/v1/contacts/{contact_id}",
        "appURL": f"{APP}/contact/{contact_id}", "category": "patient", "created": _now(),
        "canDelete": True, "canEdit": True, "displayName": "", "gender": "unknown",
        "emailAddresses": [], "phoneNumbers": [], "faxNumbers": [], "tags": [],
        "customContactFields": [], "organizationContactFields": [], "integrationLinks": [],
        "internalMemberIds": [], "hasAccount": False, "hasPendingInvite": False,
    }


def _apply(contact: dict, body: dict) -> dict:
    for key in ("category", "givenName", "middleName", "familyName", "companyName", "dateOfBirth",
                "gender", "genderDetail", "pronouns", "internalMemberIds"):
        if body.get(key) is not None:
            contact[key] = body[key]
    for list_field in ("emailAddresses", "phoneNumbers", "faxNumbers"):
        if body.get(list_field) is not None:
            contact[list_field] = [
                {"id": state().next_id("entityContact"), "value": e["value"],
                 "displayValue": e["value"], **({"label": e["label"]} if e.get("label") else {})}
                for e in body[list_field]]
    names = " ".join(contact.get(k, "") for k in ("givenName", "middleName", "familyName")).split()
    fallback = (contact["emailAddresses"] or contact["phoneNumbers"] or [{"value": ""}])[0]["value"]
    contact["displayName"] = " ".join(names) or contact.get("companyName") or fallback
    return contact


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
