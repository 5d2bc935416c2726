"""Inbound SparkLoop webhooks: one schema per event type, validation, de-duplication keys and
the subscribers an event is about.

Contract: /work/shared/vendors/sparkloop.md. Required fields follow its §4.8 table; fields the
docs leave uncertain are optional and nullable; unknown fields are kept (unknown=INCLUDE).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from marshmallow import Schema, ValidationError, fields, validate

from schemas.fields import (
    Identifier, LooseEmail, NormalisedEmail, OpenSchema, StrictInteger, TrimmedString,
)

MISSING_MESSAGE = "Missing data for required field."
# The events table stores the type in a 100-character column.
MAX_TYPE_LENGTH = 100


def _required_id() -> TrimmedString:
    return TrimmedString(required=True, validate=validate.Length(min=1))


# --- Documented referral-program events (§4.2–4.5) ---------------------------------------


class ReferralProgramSubscriberSchema(OpenSchema):
    id = _required_id()
    email = NormalisedEmail(required=True)
    first_name = TrimmedString(allow_none=True)
    name = TrimmedString(allow_none=True)
    referral_code = TrimmedString(allow_none=True)
    referral_link = TrimmedString(allow_none=True)
    referred = fields.Boolean(allow_none=True)
    tot_referrals = StrictInteger(allow_none=True)
    next_reward = StrictInteger(allow_none=True)
    created_at = StrictInteger(allow_none=True)


class RewardSchema(OpenSchema):
    id = _required_id()
    name = TrimmedString(allow_none=True)
    referrals = StrictInteger(allow_none=True)
    recurring = fields.Boolean(allow_none=True)


class EventSchema(OpenSchema):
    type = fields.String(required=True)


class NewReferralSchema(EventSchema):
    campaign_id = _required_id()
    subscriber = fields.Nested(ReferralProgramSubscriberSchema, required=True)
    referrer = fields.Nested(ReferralProgramSubscriberSchema, required=True)


class RewardUnlockedSchema(EventSchema):
    campaign_id = _required_id()
    subscriber = fields.Nested(ReferralProgramSubscriberSchema, required=True)
    reward = fields.Nested(RewardSchema, required=True)
    # Absent from the older shape of the payload.
    referrals = StrictInteger(allow_none=True)
    coupon_code = TrimmedString(allow_none=True)


class RewardRedeemedSchema(RewardUnlockedSchema):
    reward_variant_name = TrimmedString(allow_none=True)
    reward_variant_sku = TrimmedString(allow_none=True)
    # Keys unknown (§4.5); a postal address, so personal data.
    shipping_details = fields.Dict(keys=fields.String(), allow_none=True)


# --- Undocumented events (§4.6–4.7): only `type` is required -----------------------------


class LooseContactSchema(OpenSchema):
    """A person in an undocumented payload. The key names are guesses from secondary sources."""

    id = Identifier(allow_none=True)
    email = LooseEmail(allow_none=True)
    first_name = TrimmedString(allow_none=True)
    name = TrimmedString(allow_none=True)
    referral_status = TrimmedString(allow_none=True)


class PartnerCampaignSchema(OpenSchema):
    id = Identifier(allow_none=True)
    referral_code = TrimmedString(allow_none=True)


class UndocumentedEventSchema(EventSchema):
    campaign = fields.Nested(PartnerCampaignSchema, allow_none=True)
    subscriber = fields.Nested(LooseContactSchema, allow_none=True)
    lead = fields.Nested(LooseContactSchema, allow_none=True)
    referral = fields.Nested(LooseContactSchema, allow_none=True)
    email = LooseEmail(allow_none=True)
    referral_status = TrimmedString(allow_none=True)


class PartnerReferralSchema(UndocumentedEventSchema):
    pass


class OfferLeadSchema(UndocumentedEventSchema):
    offer_id = Identifier(allow_none=True)
    partner_id = Identifier(allow_none=True)


class SyncSubscriberSchema(UndocumentedEventSchema):
    pass


EVENT_SCHEMAS: dict[str, Schema] = {
    "new_referral": NewReferralSchema(),
    "new_partner_pending_referral": PartnerReferralSchema(),
    "new_partner_referral": PartnerReferralSchema(),
    "new_offer_lead": OfferLeadSchema(),
    "reward_unlocked": RewardUnlockedSchema(),
    "reward_redeemed": RewardRedeemedSchema(),
    "sync_subscriber": SyncSubscriberSchema(),
}

PARTNER_EVENTS = frozenset({"new_partner_pending_referral", "new_partner_referral"})
REWARD_EVENTS = frozenset({"reward_unlocked", "reward_redeemed"})


def validate_event(payload: dict) -> tuple[str, dict | None, dict | None]:
    """(type, data, None) when valid, (type, None, errors) when invalid, (type, None, None) when
    the type is unknown. Errors name fields and say what is wrong, never what the value was."""
    if not isinstance(payload, dict):
        return "", None, {"_schema": ["Invalid input type."]}
    event_type = payload.get("type")
    if event_type is None:
        return "", None, {"type": [MISSING_MESSAGE]}
    if not isinstance(event_type, str):
        return "", None, {"type": ["Not a valid string."]}
    if not event_type.strip():
        return "", None, {"type": ["Field may not be blank."]}
    if len(event_type) > MAX_TYPE_LENGTH:
        return "", None, {"type": [f"Longer than maximum length {MAX_TYPE_LENGTH}."]}
    schema = EVENT_SCHEMAS.get(event_type)
    if schema is None:
        return event_type, None, None
    try:
        return event_type, schema.load(payload), None
    except ValidationError as err:
        return event_type, None, err.messages


# --- The people an event is about ---------------------------------------------------------


@dataclass(frozen=True)
class Subscriber:
    id: str | None = None
    email: str | None = None
    first_name: str | None = None
    name: str | None = None
    referral_code: str | None = None
    referral_link: str | None = None
    referred: bool | None = None
    tot_referrals: int | None = None
    next_reward: int | None = None
    referral_status: str | None = None
    created_at: int | None = None


# Where an undocumented payload may describe its person, most likely first.
CONTACT_OBJECT_KEYS = ("subscriber", "lead", "referral")


def affected_subscribers(event_type: str, data: dict) -> list[tuple[str, Subscriber]]:
    """(role, Subscriber) for everyone the event is about, in delivery order."""
    if event_type == "new_referral":
        return [(role, _subscriber_from(data[role])) for role in ("subscriber", "referrer")]
    if event_type in REWARD_EVENTS:
        return [("subscriber", _subscriber_from(data["subscriber"]))]
    found = _undocumented_contact(data)
    if found is None:
        return []
    role, contact = found
    return [(role, _subscriber_from(contact, status=data.get("referral_status")))]


def _undocumented_contact(data: dict) -> tuple[str, dict] | None:
    """The first object that identifies a person, else the top-level email. Only one person:
    in an unknown payload a second object may describe someone else (a partner, say)."""
    top_level_email = _clean(data.get("email"))
    for key in CONTACT_OBJECT_KEYS:
        contact = data.get(key)
        if not isinstance(contact, dict):
            continue
        if contact.get("email") is None and top_level_email:
            contact = {**contact, "email": top_level_email}
        if _clean(contact.get("id")) or _clean(contact.get("email")):
            return key, contact
    if top_level_email:
        return "subscriber", {"email": top_level_email}
    return None


def _subscriber_from(contact: dict, status: str | None = None) -> Subscriber:
    # Undocumented objects are not type-checked beyond their identity, so keep only values
    # of the expected type.
    return Subscriber(
        id=_clean(contact.get("id")),
        email=_clean_email(contact.get("email")),
        first_name=_clean(_of_type(contact.get("first_name"), str)),
        name=_clean(_of_type(contact.get("name"), str)),
        referral_code=_clean(_of_type(contact.get("referral_code"), str)),
        referral_link=_clean(_of_type(contact.get("referral_link"), str)),
        referred=_of_type(contact.get("referred"), bool),
        tot_referrals=_integer(contact.get("tot_referrals")),
        next_reward=_integer(contact.get("next_reward")),
        referral_status=_clean(_of_type(contact.get("referral_status") or status, str)),
        created_at=_integer(contact.get("created_at")),
    )


# --- De-duplication (§5) ------------------------------------------------------------------


def dedup_key(event_type: str, data: dict) -> str:
    """A fixed-length key from the event's natural identity; personal data only hashed."""
    parts = _identity_parts(event_type, data)
    if parts is None:
        material = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    else:
        material = json.dumps([event_type, *parts], ensure_ascii=False)
    return f"{event_type[:MAX_TYPE_LENGTH]}:{hashlib.sha256(material.encode()).hexdigest()}"


def raw_dedup_key(body: bytes) -> str:
    return "raw:" + hashlib.sha256(body).hexdigest()


def _identity_parts(event_type: str, data: dict) -> list[str] | None:
    """The natural key's parts, or None when the payload lacks them (then the whole content
    is the identity, so only an identical redelivery is a duplicate)."""
    if event_type == "new_referral":
        return [_clean(data["subscriber"]["id"]), _clean(data["referrer"]["id"])]
    if event_type in REWARD_EVENTS:
        # The referral count tells repeated unlocks of a recurring reward apart.
        count = data.get("referrals")
        if count is None:
            count = data["subscriber"].get("tot_referrals")
        parts = [_clean(data["subscriber"]["id"]), _clean(data["reward"]["id"])]
        if event_type == "reward_redeemed":
            parts.append(_clean(data.get("reward_variant_sku")) or "")
        return [*parts, "" if count is None else str(count)]
    found = _undocumented_contact(data)
    contact = found[1] if found else {}
    email = _clean_email(contact.get("email"))
    if event_type in PARTNER_EVENTS:
        parts = [_clean((data.get("campaign") or {}).get("id")), email]
    elif event_type == "new_offer_lead":
        parts = [_clean(data.get("offer_id")), email]
    elif event_type == "sync_subscriber":
        person = _clean(contact.get("id")) or email
        # The status is part of the key so that a real status change is not dropped.
        parts = [person, _clean(contact.get("referral_status") or data.get("referral_status"))]
    else:
        return None
    return parts if all(parts) else None


# --- Normalisation helpers ----------------------------------------------------------------


def _clean(value) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def _clean_email(value) -> str | None:
    text = _clean(_of_type(value, str))
    return text.lower() if text else None


def _of_type(value, kind: type):
    return value if isinstance(value, kind) else None


def _integer(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
