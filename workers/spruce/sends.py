"""What Spruce receives: a contact for the subscriber, and for some events an internal note
for staff in a note conversation about that contact.

Contract: https://developer.sprucehealth.com/reference/createcontact,
https://developer.sprucehealth.com/reference/createconversation and
https://developer.sprucehealth.com/reference/postconversationmessage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from schemas.sparkloop import Subscriber

SHIPPING_PREFIX = "shipping_"


@dataclass(frozen=True)
class SpruceContact:
    """The subscriber's contact is found by email, or created."""


@dataclass(frozen=True)
class SpruceNote:
    """The contact, its note conversation, and one internal note whose text is `text(data)`."""

    text: Callable[[dict], str]


def contact_body(subscriber: Subscriber) -> dict:
    """`POST /contacts` for a SparkLoop subscriber, as a patient with their email."""
    given_name, family_name = _split_name(subscriber.first_name, subscriber.name)
    body: dict = {"category": "patient"}
    if given_name:
        body["givenName"] = given_name
    if family_name:
        body["familyName"] = family_name
    if subscriber.email:
        body["emailAddresses"] = [{"value": subscriber.email}]
    if len(body) == 1:
        # Spruce requires at least one of the name fields, phone, fax or email.
        raise ValueError("subscriber has neither an email nor a name to create a Spruce contact")
    return body


def _split_name(first_name: str | None, name: str | None) -> tuple[str, str]:
    """Given name: first_name, else the first word of name. Family name: the rest of name."""
    full_name = " ".join((name or "").split())
    words = full_name.split(" ")
    given_name = " ".join((first_name or "").split()) or words[0]
    if full_name.lower() == given_name.lower() or full_name.lower().startswith(given_name.lower() + " "):
        return given_name, full_name[len(given_name) :].strip()
    return given_name, " ".join(words[1:])


def search_by_email_body(email: str) -> dict:
    """`POST /contacts/search` matching any contact with this email address."""
    return {"structured": {"emailAddressFilter": [{"match": "any", "values": [email.strip().lower()]}]}}


def note_conversation_body(contact_id: str, member_ids: list[str], title: str = "SparkLoop referrals") -> dict:
    """`POST /conversations` creating an internal note conversation about one contact.
    Without memberIds only its creator can see it, so callers should pass them."""
    note: dict = {"title": title, "associatedContactIds": [contact_id]}
    if member_ids:
        note["memberIds"] = list(member_ids)
    return {"type": "note", "note": note}


def note_message_body(text: str) -> dict:
    """`POST /conversations/{id}/messages`: a plain-text internal note for staff.
    Note conversations accept only internal messages."""
    return {"body": [{"type": "text", "value": text}], "internal": True}


def reward_unlocked_note(data: dict) -> str:
    return reward_summary("reward unlocked", data)


def reward_redeemed_note(data: dict) -> str:
    lines = [reward_summary("reward redeemed", data)]
    variant = variant_text(data)
    if variant:
        lines.append(f"Variant: {variant}.")
    shipping = shipping_lines(data.get("shipping_details") or {})
    if shipping:
        lines += ["", "Shipping details:", *shipping]
    return "\n".join(lines)


def reward_summary(what: str, data: dict) -> str:
    reward = data.get("reward") or {}
    text = f"SparkLoop: {what} — {reward.get('name') or reward.get('id') or 'unnamed reward'}"
    count = referral_count(data)
    if count is not None:
        text += f" (after {count} referral{'' if count == 1 else 's'})"
    text += "."
    if data.get("coupon_code"):
        text += f" Coupon: {data['coupon_code']}."
    return text


def referral_count(data: dict) -> int | None:
    for count in (data.get("referrals"), (data.get("subscriber") or {}).get("tot_referrals")):
        if count is not None:
            return count
    return None


def variant_text(data: dict) -> str | None:
    name, sku = data.get("reward_variant_name"), data.get("reward_variant_sku")
    if name and sku:
        return f"{name} ({sku})"
    return name or sku


def shipping_lines(details: dict, parent_key: str = "") -> list[str]:
    """Lines of "Key: value" for the open shipping_details dict, whatever its keys turn out to be."""
    lines = []
    for key, value in details.items():
        key_path = f"{parent_key}_{key}" if parent_key else str(key)
        label = _humanise(key_path)
        if isinstance(value, dict):
            lines += shipping_lines(value, key_path)
        elif isinstance(value, list):
            lines.append(f"{label}: {', '.join(str(item) for item in value)}")
        elif value is not None and str(value).strip():
            lines.append(f"{label}: {str(value).strip()}")
    return lines


def _humanise(key: str) -> str:
    words = key.removeprefix(SHIPPING_PREFIX).replace("_", " ").strip()
    return words[:1].upper() + words[1:]
