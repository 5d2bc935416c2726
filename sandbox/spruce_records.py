"""Spruce's records and input rules, without HTTP: contact, conversation and item shapes,
validation of the documented request bodies, structured search, and pageSize/paginationToken
paging. Everything invalid raises Rejected(400, ...).

Shapes (Spruce API): https://developer.sprucehealth.com/reference/contact,
https://developer.sprucehealth.com/reference/conversation,
https://developer.sprucehealth.com/reference/conversationitems."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sandbox.gate import Rejected

ORG_ID = "entity_0SANDB0XORG00"
ORG_NAME = "Sandbox Clinic"
APP_URL = f"https://app.sprucehealth.com/org/{ORG_ID}"
DEFAULT_PAGE_SIZE = 50  # undocumented; within every documented range

CONTACT_FIELDS = {
    "category",
    "givenName",
    "middleName",
    "familyName",
    "companyName",
    "dateOfBirth",
    "gender",
    "genderDetail",
    "pronouns",
    "emailAddresses",
    "phoneNumbers",
    "faxNumbers",
    "organizationContactFields",
    "tagIds",
    "internalMemberIds",
}
IDENTIFYING_FIELDS = ("givenName", "familyName", "phoneNumbers", "faxNumbers", "emailAddresses")
TEXT_FIELDS = ("givenName", "middleName", "familyName", "companyName", "genderDetail", "pronouns")
ENTRY_LISTS = ("emailAddresses", "phoneNumbers", "faxNumbers")
CATEGORIES = ("patient", "professional")  # input only; responses may also say clinic/unknown
GENDERS = ("unknown", "male", "female", "other")
MATCH_MODES = ("any", "all", "none")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- contacts ---------------------------------------------------------------------------------


def validate_contact(body: Any, creating: bool) -> dict:
    if not isinstance(body, dict):
        raise Rejected(400, "body must be a JSON object")
    unknown = set(body) - CONTACT_FIELDS
    if unknown:
        raise Rejected(400, f"unknown fields: {', '.join(sorted(unknown))}")
    if creating and not any(body.get(name) for name in IDENTIFYING_FIELDS):
        raise Rejected(
            400, "at least one of givenName, familyName, phoneNumbers, faxNumbers, emailAddresses is required"
        )
    given = {name: value for name, value in body.items() if value is not None}
    for name in TEXT_FIELDS:
        if name in given and not isinstance(given[name], str):
            raise Rejected(400, f"{name} must be a string")
    if "category" in given and given["category"] not in CATEGORIES:
        raise Rejected(400, "category must be patient or professional")
    if "gender" in given and given["gender"] not in GENDERS:
        raise Rejected(400, f"gender must be one of {', '.join(GENDERS)}")
    if "dateOfBirth" in given:
        _check_date(given["dateOfBirth"])
    for name in ENTRY_LISTS:
        if name in given:
            _check_entries(name, given[name])
    if "internalMemberIds" in given and not _strings(given["internalMemberIds"]):
        raise Rejected(400, "internalMemberIds must be a list of member ids")
    # The sandbox has no tags or organization fields, so no id given here can exist.
    for name in ("tagIds", "organizationContactFields"):
        if given.get(name):
            raise Rejected(400, f"{name}: unknown id (the sandbox has no contact tags or fields)")
    return given


def new_contact(contact_id: str, api_base: str) -> dict:
    return {
        "id": contact_id,
        "object": "contact",
        "apiURL": f"{api_base}/contacts/{contact_id}",
        "appURL": f"{APP_URL}/contact/{contact_id}",
        "category": "patient",
        "created": now_iso(),
        "canDelete": True,
        "canEdit": True,
        "displayName": "",
        "gender": "unknown",
        "emailAddresses": [],
        "phoneNumbers": [],
        "faxNumbers": [],
        "tags": [],
        "customContactFields": [],
        "organizationContactFields": [],
        "integrationLinks": [],
        "internalMemberIds": [],
        "hasAccount": False,
        "hasPendingInvite": False,
        # Required by Spruce's OpenAPI document, which describes no such property: kept empty.
        "customFields": [],
    }


def apply_contact(contact: dict, fields: dict, new_id: Callable[[str], str]) -> None:
    """Set the given fields (validated by validate_contact); lists replace the whole list."""
    for name, value in fields.items():
        if name in ENTRY_LISTS:
            contact[name] = [_entry(name, raw, contact[name], new_id) for raw in value]
        elif name not in ("tagIds", "organizationContactFields"):
            contact[name] = list(value) if isinstance(value, list) else value
    names = " ".join(contact.get(k) or "" for k in ("givenName", "middleName", "familyName")).split()
    contact["displayName"] = (
        " ".join(names)
        or contact.get("companyName")
        or next((e["value"] for e in contact["emailAddresses"]), None)
        or next((p["displayValue"] for p in contact["phoneNumbers"]), "")
    )


def _entry(list_name: str, raw: dict, existing: list[dict], new_id: Callable[[str], str]) -> dict:
    value = raw["value"].strip()
    if list_name != "emailAddresses":  # a phone number the request's check found valid
        value = normalize_phone(value) or value
    # An unchanged value keeps its entry id across a PATCH.
    same = next((e for e in existing if e["value"] == value), None)
    entry = {"id": same["id"] if same else new_id("entityContact"), "value": value}
    if list_name != "emailAddresses":
        entry["displayValue"] = _display_phone(value)
    if raw.get("label"):
        entry["label"] = raw["label"]
    return entry


def _check_entries(name: str, entries: Any) -> None:
    if not isinstance(entries, list):
        raise Rejected(400, f"{name} must be a list of {{value, label?}}")
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), str) or not entry["value"].strip():
            raise Rejected(400, f"{name}[{n}].value is required")
        if set(entry) - {"value", "label"} or not isinstance(entry.get("label", ""), str):
            raise Rejected(400, f"{name}[{n}] must be {{value, label?}}")
        if name == "emailAddresses" and not _EMAIL.match(entry["value"].strip()):
            raise Rejected(400, f"{name}[{n}] is not a valid email address")
        if name != "emailAddresses" and normalize_phone(entry["value"]) is None:
            raise Rejected(400, f"{name}[{n}] is not a valid phone number")


def normalize_phone(value: str) -> str | None:
    """E.164 for the documented formats (2065551234, +12065551234, (206) 555-1234,
    206-555-1234); None if it is not a phone number. North American when no country code."""
    text = value.strip()
    if not re.fullmatch(r"\+?[\d\s().\-]+", text):
        return None
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        return f"+{digits}" if 8 <= len(digits) <= 15 else None
    if len(digits) == 10:
        return f"+1{digits}"
    if len(digits) == 11 and digits.startswith("1"):
        return f"+{digits}"
    return None


def _display_phone(e164: str) -> str:
    if e164.startswith("+1") and len(e164) == 12:
        return f"({e164[2:5]}) {e164[5:8]}-{e164[8:]}"
    return e164


def _check_date(value: Any) -> None:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        raise Rejected(400, "dateOfBirth must be YYYY-MM-DD") from None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise Rejected(400, "dateOfBirth must be YYYY-MM-DD")


def _strings(value: Any) -> bool:
    """A list (possibly empty) of non-empty strings."""
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def delete_contact(contacts: dict, conversations: dict, items: dict, contact_id: str) -> None:
    """Delete a contact and the conversations associated with it, as deleting a contact in
    Spruce does; the caller holds the lock and knows the contact exists."""
    del contacts[contact_id]
    for conversation_id in [c["id"] for c in conversations.values() if contact_id in c["associatedContactIds"]]:
        delete_conversation(conversations, items, conversation_id)


def delete_conversation(conversations: dict, items: dict, conversation_id: str) -> None:
    """Staff deleting a conversation in the app (the API has no such call): it and its items go."""
    del conversations[conversation_id]
    items.pop(conversation_id, None)


def merge_contact(contacts: dict, conversations: dict, merged_id: str, into_id: str) -> dict:
    """Staff merging a duplicate contact into another in the app (the API has no such call):
    `merged_id` is gone, its emails and numbers and its conversations now belong to `into_id`.
    Returns the contact merged into; the caller holds the lock."""
    if merged_id == into_id:
        raise Rejected(400, "a contact cannot be merged into itself")
    merged, into = contacts.pop(merged_id), contacts[into_id]
    for name in ENTRY_LISTS:
        have = {entry["value"] for entry in into[name]}
        into[name] += [entry for entry in merged[name] if entry["value"] not in have]
    for conversation in conversations.values():
        ids = conversation["associatedContactIds"]
        if merged_id in ids:
            conversation["associatedContactIds"] = list(
                dict.fromkeys(into_id if contact_id == merged_id else contact_id for contact_id in ids)
            )
    return into


# --- search -----------------------------------------------------------------------------------


def search_predicate(body: Any) -> Callable[[dict], bool]:
    """The contact filter for a SearchContacts body: every filter must hold (AND)."""
    if body is None:
        body = {}
    if not isinstance(body, dict) or set(body) - {"freeText", "structured"}:
        raise Rejected(400, "search body must be {freeText?, structured?}")
    checks: list[Callable[[dict], bool]] = []
    structured = body.get("structured") or {}
    if not isinstance(structured, dict):
        raise Rejected(400, "structured must be an object")
    for name, filters in structured.items():
        if name == "emailAddressFilter":
            checks += [_value_filter(f, _emails, lambda v: v.strip().lower()) for f in _filters(filters, name)]
        elif name == "phoneNumberFilter":
            checks += [_value_filter(f, _phones("phoneNumbers"), _search_phone) for f in _filters(filters, name)]
        elif name == "faxNumberFilter":
            checks += [_value_filter(f, _phones("faxNumbers"), _search_phone) for f in _filters(filters, name)]
        else:
            # Ignoring a filter would silently widen the result; say so instead.
            raise Rejected(400, f"structured.{name} is not supported by the sandbox")
    free_text = body.get("freeText")
    if free_text:
        if not isinstance(free_text, str):
            raise Rejected(400, "freeText must be a string")
        needle = free_text.strip().lower()
        checks.append(lambda c: needle in c["displayName"].lower() or any(needle in e for e in _emails(c)))
    return lambda contact: all(check(contact) for check in checks)


def _filters(filters: Any, name: str) -> list[dict]:
    if not isinstance(filters, list):
        raise Rejected(400, f"structured.{name} must be a list of filters")
    for n, flt in enumerate(filters):
        if not isinstance(flt, dict) or flt.get("match") not in MATCH_MODES:
            raise Rejected(400, f"structured.{name}[{n}].match must be one of {', '.join(MATCH_MODES)}")
        if not _strings(flt.get("values")) or not flt["values"]:
            raise Rejected(400, f"structured.{name}[{n}].values must be a non-empty list of strings")
    return filters


def _value_filter(flt: dict, have_of: Callable[[dict], set], normalize: Callable[[str], str]) -> Callable[[dict], bool]:
    wanted = {normalize(v) for v in flt["values"]}
    if flt["match"] == "all":
        return lambda c: wanted <= have_of(c)
    if flt["match"] == "none":
        return lambda c: not wanted & have_of(c)
    return lambda c: bool(wanted & have_of(c))


def _emails(contact: dict) -> set[str]:
    return {e["value"].lower() for e in contact["emailAddresses"]}


def _phones(field: str) -> Callable[[dict], set[str]]:
    return lambda contact: {e["value"] for e in contact[field]}


def _search_phone(value: str) -> str:
    normalized = normalize_phone(value)
    if normalized is None:
        raise Rejected(400, "phone filter values must be phone numbers")
    return normalized


# --- conversations and items ------------------------------------------------------------------


def validate_note_conversation(body: Any) -> dict:
    """The `note` part of a CreateConversation body
    (https://developer.sprucehealth.com/reference/createconversation)."""
    if not isinstance(body, dict) or set(body) - {"type", "note", "secure"}:
        raise Rejected(400, "body must be {type, note?, secure?}")
    if body.get("type") == "secure":
        raise Rejected(400, "secure conversations are not supported by the sandbox")
    if body.get("type") != "note":
        raise Rejected(400, "type must be secure or note")
    note = body.get("note") or {}
    if not isinstance(note, dict) or set(note) - {"title", "memberIds", "associatedContactIds", "message"}:
        raise Rejected(400, "note must be {title?, memberIds?, associatedContactIds?, message?}")
    if note.get("title") is not None and not isinstance(note["title"], str):
        raise Rejected(400, "note.title must be a string")
    for name in ("memberIds", "associatedContactIds"):
        if note.get(name) is not None and not _strings(note[name]):
            raise Rejected(400, f"note.{name} must be a list of ids")
    if note.get("message") is not None:
        validate_message(note["message"], "note")
    return note


def new_conversation(conversation_id: str, note: dict, api_base: str) -> dict:
    created = now_iso()
    return {
        "id": conversation_id,
        "object": "conversation",
        "apiURL": f"{api_base}/conversations/{conversation_id}",
        "appURL": f"{APP_URL}/thread/{conversation_id}",
        "type": "note",
        "title": note.get("title") or "Note",
        "subtitle": "",
        "archived": False,
        "isReadOnly": False,
        "createdAt": created,
        "lastMessageAt": created,
        "associatedContactIds": list(note.get("associatedContactIds") or []),
        "internalMemberIds": list(note.get("memberIds") or []),
        "tags": [],
        "externalParticipants": [],
    }


def validate_message(body: Any, conversation_type: str) -> dict:
    """A PostConversationMessage body (https://developer.sprucehealth.com/reference/postconversationmessage)."""
    if not isinstance(body, dict) or set(body) - {"body", "internal", "author", "attachments", "stayArchived"}:
        raise Rejected(400, "message must be {body, internal?, author?, attachments?, stayArchived?}")
    elements = body.get("body")
    if not isinstance(elements, list) or not elements:
        raise Rejected(400, "body is required and must be a non-empty list")
    for n, element in enumerate(elements):
        if (
            not isinstance(element, dict)
            or element.get("type") not in ("text", "page")
            or not isinstance(element.get("value"), str)
            or not element["value"]
        ):
            raise Rejected(400, f"body[{n}] must be {{type: text|page, value}}")
    if not isinstance(body.get("internal", False), bool):
        raise Rejected(400, "internal must be a boolean")
    if conversation_type == "note" and body.get("internal") is not True:
        raise Rejected(400, "note conversations require internal: true")
    if body.get("attachments"):
        raise Rejected(400, "attachments are not supported by the sandbox")
    if body.get("author") is not None and not isinstance(body["author"], str):
        raise Rejected(400, "author must be a member id")
    return body


def new_item(item_id: str, conversation_id: str, message: dict, request_id: str, api_base: str) -> dict:
    created = now_iso()
    author = message.get("author")
    return {
        "id": item_id,
        "object": "conversationItem",
        "conversationId": conversation_id,
        "apiURL": f"{api_base}/conversationItems/{item_id}",
        "appURL": f"{APP_URL}/thread/{conversation_id}/message/{item_id}",
        "canDelete": True,
        "createdAt": created,
        "modifiedAt": created,
        "direction": "none",
        "text": "".join(e["value"] for e in message["body"] if e["type"] == "text"),
        "isInternalNote": bool(message.get("internal")),
        "requestId": request_id,
        # The author defaults to the organization
        # (Spruce API: https://developer.sprucehealth.com/reference/postconversationmessage).
        "author": {"id": author, "displayName": author} if author else {"id": ORG_ID, "displayName": ORG_NAME},
        "attachments": [],
        "buttons": [],
        "pages": [],
    }


# --- paging -----------------------------------------------------------------------------------


def page(records: list, args, name: str, max_size: int) -> dict:
    """One page of `records` under `name`, from pageSize/paginationToken query parameters."""
    try:
        size = int(args.get("pageSize", DEFAULT_PAGE_SIZE))
    except ValueError:
        raise Rejected(400, "pageSize must be an integer") from None
    if not 1 <= size <= max_size:
        raise Rejected(400, f"pageSize must be between 1 and {max_size}")
    offset = _offset(args.get("paginationToken") or "")
    chunk = records[offset : offset + size]
    result = {name: chunk, "hasMore": offset + size < len(records), "totalCount": len(records)}
    if result["hasMore"]:
        result["paginationToken"] = base64.urlsafe_b64encode(f"offset:{offset + size}".encode()).decode()
    return result


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(value)
    except (binascii.Error, UnicodeError, ValueError):
        raise Rejected(400, "invalid paginationToken") from None
    if kind != "offset" or offset < 0:
        raise Rejected(400, "invalid paginationToken")
    return offset
