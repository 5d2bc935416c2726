"""Spruce's contacts, note conversations and messages (Spruce API:
https://developer.sprucehealth.com/docs/overview): Bearer auth, camelCase, bare vs wrapped
responses as documented, pageSize/paginationToken paging, `s-idempotency-key` with 422 on a
repeat, `s-request-id` and `s-ratelimit-*` on every response, and {"statusCode", "type",
"message"} errors. Record shapes and input rules: spruce_records."""

from __future__ import annotations

import copy

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.routing import BaseConverter

from sandbox import spruce_records as records
from sandbox.budget import Window
from sandbox.gate import Rejected, Vendor, state

PREFIX = "/spruce/v1"
bp = Blueprint("spruce", __name__, url_prefix=PREFIX)

MAX_IDEMPOTENCY_KEY = 255
# Spruce takes the header on POST/PATCH (https://developer.sprucehealth.com/docs/overview) but
# declares none on SearchContacts (https://developer.sprucehealth.com/reference/searchcontacts).
IDEMPOTENCY_EXEMPT = {"spruce.search_contacts"}


class IdConverter(BaseConverter):
    """`entity_…`, `t_…`: anything else under /contacts/ is a route, not an id, so GET
    /contacts/search is a 405 (as observed at Spruce) rather than a missing contact."""

    regex = r"[A-Za-z]+_[A-Za-z0-9]+"


def error(status: int, error_type: str, message: str) -> Response:
    response = jsonify(statusCode=status, type=error_type, message=message)
    response.status_code = status
    return response


def _response_headers(request_id: str, window: Window | None) -> dict[str, str]:
    headers = {"s-request-id": request_id}
    if window is not None:  # None when the token was rejected: no organization to count against
        headers["s-ratelimit-limit"] = str(window.limit)
        headers["s-ratelimit-remaining"] = str(window.remaining)
        if window.daily_limit is not None:
            headers["s-ratelimit-daily-limit"] = str(window.daily_limit)
            headers["s-ratelimit-daily-remaining"] = str(window.daily_remaining)
    return headers


VENDOR = Vendor(
    name="spruce",
    prefix=PREFIX,
    authorization=lambda settings: f"Bearer {settings.spruce_api_token}",
    error=error,
    throttle_headers=lambda seconds: {"Retry-After": str(seconds)},
    response_headers=_response_headers,
)


# --- idempotency ------------------------------------------------------------------------------


@bp.before_request
def reserve_idempotency_key():
    key = request.headers.get("s-idempotency-key")
    if request.method not in ("POST", "PATCH") or request.endpoint in IDEMPOTENCY_EXEMPT or not key:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY:
        return error(400, "BAD_PARAMETER", f"s-idempotency-key is longer than {MAX_IDEMPOTENCY_KEY} characters")
    if not state().reserve_idempotency_key(request.path, key):
        # A repeat is rejected; the original response is not replayed
        # (Spruce API: https://developer.sprucehealth.com/docs/overview).
        return error(422, "duplicate_request", "duplicate request")
    g.idempotency_key = key
    return None


@bp.after_request
def settle_idempotency_key(response: Response) -> Response:
    key = g.pop("idempotency_key", None)
    if key:
        state().settle_idempotency_key(request.path, key, succeeded=200 <= response.status_code < 300)
    return response


@bp.teardown_request
def release_idempotency_key(_exc):
    key = g.pop("idempotency_key", None)  # still here only if no response was made
    if key:
        state().settle_idempotency_key(request.path, key, succeeded=False)


# --- contacts ---------------------------------------------------------------------------------


@bp.post("/contacts")
def create_contact():
    fields = records.validate_contact(_json_body(), creating=True)
    sandbox = state()
    with sandbox.lock:
        contact = records.new_contact(sandbox.new_id("entity"), _api_base())
        records.apply_contact(contact, fields, sandbox.new_id)
        sandbox.contacts[contact["id"]] = contact
        sandbox.hide_for_a_while(contact["id"], "spruce_search")
        created = copy.deepcopy(contact)
    return jsonify(created), 201


@bp.get("/contacts")
def list_contacts():
    sandbox = state()
    with sandbox.lock:
        contacts = sorted(sandbox.contacts.values(), key=lambda c: c["id"])
        result = copy.deepcopy(records.page(contacts, request.args, "contacts", max_size=500))
    return jsonify(result)


@bp.post("/contacts/search")
def search_contacts():
    matches = records.search_predicate(_json_body(required=False))
    sandbox = state()
    with sandbox.lock:
        found = sorted(
            (c for c in sandbox.contacts.values() if sandbox.visible(c["id"], "spruce_search") and matches(c)),
            key=lambda c: c["id"],
        )
        result = copy.deepcopy(records.page(found, request.args, "contacts", max_size=500))
    return jsonify(result | {"totalCountRelation": "eq"})


@bp.get("/contacts/<spruce_id:contact_id>")
def get_contact(contact_id: str):
    with state().lock:
        contact = copy.deepcopy(_contact(contact_id))
    return jsonify(contact)


@bp.patch("/contacts/<spruce_id:contact_id>")
def update_contact(contact_id: str):
    fields = records.validate_contact(_json_body(), creating=False)
    sandbox = state()
    with sandbox.lock:
        contact = _contact(contact_id)
        records.apply_contact(contact, fields, sandbox.new_id)
        updated = copy.deepcopy(contact)
    return jsonify(updated)


@bp.delete("/contacts/<spruce_id:contact_id>")
def delete_contact(contact_id: str):
    """200 without a body (https://developer.sprucehealth.com/reference/deletecontact). Its
    conversations go with it: the reference does not say, and it is the harder case for Relay."""
    sandbox = state()
    with sandbox.lock:
        _contact(contact_id)
        records.delete_contact(sandbox.contacts, sandbox.conversations, sandbox.items, contact_id)
    return Response(status=200)


@bp.get("/contacts/<spruce_id:contact_id>/conversations")
def contact_conversations(contact_id: str):
    sandbox = state()
    with sandbox.lock:
        _contact(contact_id)
        found = sorted(
            (
                c
                for c in sandbox.conversations.values()
                if contact_id in c["associatedContactIds"] and sandbox.visible(c["id"], "spruce_conversations")
            ),
            key=lambda c: c["id"],
        )
        result = copy.deepcopy(found)
    # Not paginated (Spruce API: https://developer.sprucehealth.com/reference/contactconversations).
    return jsonify(conversations=result)


# --- conversations and notes ------------------------------------------------------------------


@bp.post("/conversations")
def create_conversation():
    note = records.validate_note_conversation(_json_body())
    sandbox = state()
    with sandbox.lock:
        unknown = [c for c in note.get("associatedContactIds") or [] if c not in sandbox.contacts]
        if unknown:
            raise Rejected(400, "associatedContactIds: unknown contact id")
        conversation = records.new_conversation(sandbox.new_id("t"), note, _api_base())
        sandbox.conversations[conversation["id"]] = conversation
        sandbox.items[conversation["id"]] = []
        sandbox.hide_for_a_while(conversation["id"], "spruce_conversations")
        result = {"conversation": copy.deepcopy(conversation)}
        if note.get("message"):
            result["postMessageRequestId"] = _post(conversation, note["message"])
    return jsonify(result), 201


@bp.get("/conversations/<spruce_id:conversation_id>")
def get_conversation(conversation_id: str):
    with state().lock:
        conversation = copy.deepcopy(_conversation(conversation_id))
    # Wrapped, unlike contacts (Spruce API: https://developer.sprucehealth.com/reference/conversation).
    return jsonify(conversation=conversation)


@bp.post("/conversations/<spruce_id:conversation_id>/messages")
def post_message(conversation_id: str):
    body = _json_body()
    with state().lock:
        conversation = _conversation(conversation_id)
        request_id = _post(conversation, records.validate_message(body, conversation["type"]))
    # 200: accepted, posted asynchronously
    # (Spruce API: https://developer.sprucehealth.com/reference/postconversationmessage).
    return jsonify(requestId=request_id)


@bp.get("/conversations/<spruce_id:conversation_id>/items")
def conversation_items(conversation_id: str):
    order = request.args.get("order", "newest_first")
    if order not in ("newest_first", "oldest_first"):
        raise Rejected(400, "order must be newest_first or oldest_first")
    sandbox = state()
    with sandbox.lock:
        _conversation(conversation_id)
        items = [i for i in sandbox.items[conversation_id] if sandbox.visible(i["id"], "spruce_items")]
        if order == "newest_first":
            items.reverse()
        result = copy.deepcopy(records.page(items, request.args, "conversationItems", max_size=200))
    return jsonify(result)


# --- organization -----------------------------------------------------------------------------

ORGANIZATION = {"id": records.ORG_ID, "name": records.ORG_NAME, "type": "organization", "object": "organization"}
# The sandbox organization's teammates and team; the suspended teammate stays a member, as at
# Spruce (the teammate schema: https://developer.sprucehealth.com/reference/organizationmembers).
MEMBERS = (
    {
        "id": "entity_0SANDB0XDOC001",
        "type": "teammate",
        "displayName": "Dana Reyes, MD",
        "email": "dana@sandbox-clinic.example",
        "isAdmin": True,
        "isSuspended": False,
        "object": "teammate",
    },
    {
        "id": "entity_0SANDB0XNRS002",
        "type": "teammate",
        "displayName": "Sam Okafor, RN",
        "email": "sam@sandbox-clinic.example",
        "isAdmin": False,
        "isSuspended": False,
        "object": "teammate",
    },
    {
        "id": "entity_0SANDB0XOLD003",
        "type": "teammate",
        "displayName": "Lee Marsh",
        "isAdmin": False,
        "isSuspended": True,
        "object": "teammate",
    },
    {"id": "entity_0SANDB0XTEAM04", "type": "team", "name": "Referrals Team", "object": "team"},
    ORGANIZATION,
)
MIN_MEMBERS_PAGE = 2  # OrganizationMembers' pageSize is 2-500


@bp.get("/organization")
def organization():
    """Wrapped, unlike a member (https://developer.sprucehealth.com/reference/organization)."""
    return jsonify(organization=ORGANIZATION)


@bp.get("/organization/members")
def organization_members():
    """Every teammate and team, and the organization itself
    (https://developer.sprucehealth.com/reference/organizationmembers)."""
    size = request.args.get("pageSize")
    if size is not None and size.isdigit() and int(size) < MIN_MEMBERS_PAGE:
        raise Rejected(400, f"pageSize must be between {MIN_MEMBERS_PAGE} and 500")
    return jsonify(copy.deepcopy(records.page(list(MEMBERS), request.args, "members", max_size=500)))


# --- helpers ----------------------------------------------------------------------------------


def _post(conversation: dict, message: dict) -> str:
    """Add a message as a conversation item; the caller holds the lock."""
    sandbox = state()
    request_id = sandbox.new_id("asyncRequest")
    item = records.new_item(sandbox.new_id("ti"), conversation["id"], message, request_id, _api_base())
    sandbox.items[conversation["id"]].append(item)
    sandbox.hide_for_a_while(item["id"], "spruce_items")
    conversation["lastMessageAt"] = item["createdAt"]
    return request_id


def _contact(contact_id: str) -> dict:
    contact = state().contacts.get(contact_id)
    if contact is None:
        raise Rejected(404, "contact not found")
    return contact


def _conversation(conversation_id: str) -> dict:
    conversation = state().conversations.get(conversation_id)
    if conversation is None:
        raise Rejected(404, "conversation not found")
    return conversation


def _json_body(required: bool = True):
    if not request.get_data() and not required:
        return None
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise Rejected(400, "body must be JSON")
    return body


def _api_base() -> str:
    return request.host_url.rstrip("/") + VENDOR.prefix
