"""Inbound SparkLoop webhooks: the payload schemas, where each names its people, and the parts
of its de-duplication key. `schemas.events` binds them into one spec per event type.

Contract: https://docs.sparkloop.app/webhooks (the documented example payloads are in
sandbox/fixtures/sparkloop/). Required fields are those every documented example carries;
fields the docs leave uncertain are optional and nullable; unknown fields are kept
(unknown=INCLUDE), because SparkLoop adds fields without notice.
"""

from __future__ import annotations

from dataclasses import dataclass

from marshmallow import fields, validate

from schemas.fields import (
    Identifier,
    LooseEmail,
    NormalisedEmail,
    OpenSchema,
    StrictInteger,
    TrimmedString,
)
from schemas.values import clean, clean_email, integer, of_type


def _required_id() -> TrimmedString:
    return TrimmedString(required=True, validate=validate.Length(min=1))


# --- Documented referral-program events ----------------------------------------------------


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
    # Its keys are not documented; a postal address, so personal data.
    shipping_details = fields.Dict(keys=fields.String(), allow_none=True)


# --- Events SparkLoop names without an example: only `type` is required --------------------


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


People = list[tuple[str, Subscriber]]  # (role, subscriber) in delivery order, the one it is about first


class PeopleAt:
    """Where an event type's payload names people, declared once in its spec (schemas.events):
    delivery reads the subscribers from here, and `person_places()` gathers every spec's
    places for relay.subjects and workers.erasure. This one: a person under each key (the
    schema requires them), in delivery order; the event is about the first."""

    top_level_email = False  # whether a top-level `email` names the person too

    def __init__(self, *keys: str):
        self.keys = keys

    @property
    def about(self) -> tuple[str, ...]:
        """The keys of the person the event is about, most likely first."""
        return self.keys[:1]

    @property
    def contact_keys(self) -> tuple[str, ...]:
        """Objects of an undocumented shape: a top-level email completes one without an email,
        and their `referral_status` is the event's."""
        return ()

    def subscribers(self, data: dict) -> People:
        return [(key, subscriber_from(data[key])) for key in self.keys]


class FirstPersonAt(PeopleAt):
    """Undocumented payloads: one person, the first of these objects that identifies one (id or
    email), else the top-level email. Only one: in an unknown payload a second object may
    describe someone else (a partner, say)."""

    top_level_email = True

    @property
    def about(self) -> tuple[str, ...]:
        return self.keys

    @property
    def contact_keys(self) -> tuple[str, ...]:
        return self.keys

    def subscribers(self, data: dict) -> People:
        found = self.contact(data)
        if found is None:
            return []
        role, contact = found
        return [(role, subscriber_from(contact, status=data.get("referral_status")))]

    def contact(self, data: dict) -> tuple[str, dict] | None:
        """(key, object) of the person, the top-level email given to an object without one;
        a top-level email alone is the `subscriber`."""
        top_level_email = clean(data.get("email"))
        for key in self.keys:
            contact = data.get(key)
            if not isinstance(contact, dict):
                continue
            if contact.get("email") is None and top_level_email:
                contact = {**contact, "email": top_level_email}
            if clean(contact.get("id")) or clean(contact.get("email")):
                return key, contact
        if top_level_email:
            return "subscriber", {"email": top_level_email}
        return None


REFERRAL_PEOPLE = PeopleAt("subscriber", "referrer")  # new_referral: the new subscriber, then the referrer
REWARD_PEOPLE = PeopleAt("subscriber")
# Where an undocumented payload may describe its person, most likely first (the key names
# are guesses from secondary sources).
UNDOCUMENTED_PEOPLE = FirstPersonAt("subscriber", "lead", "referral")


def subscriber_from(contact: dict, status: str | None = None) -> Subscriber:
    # Undocumented objects are not type-checked beyond their identity, so keep only values
    # of the expected type.
    return Subscriber(
        id=clean(contact.get("id")),
        email=clean_email(contact.get("email")),
        first_name=clean(of_type(contact.get("first_name"), str)),
        name=clean(of_type(contact.get("name"), str)),
        referral_code=clean(of_type(contact.get("referral_code"), str)),
        referral_link=clean(of_type(contact.get("referral_link"), str)),
        referred=of_type(contact.get("referred"), bool),
        tot_referrals=integer(contact.get("tot_referrals")),
        next_reward=integer(contact.get("next_reward")),
        referral_status=clean(of_type(contact.get("referral_status") or status, str)),
        created_at=integer(contact.get("created_at")),
    )


# --- Identity: the parts of each event's de-duplication key --------------------------------
# SparkLoop sends no event id. Each function returns the parts of the event's natural key, or
# None when the payload lacks them (then the whole content is the identity, so only an
# identical redelivery is a duplicate).

Identity = list[str | None] | None


def referral_identity(data: dict) -> Identity:
    return [clean(data["subscriber"]["id"]), clean(data["referrer"]["id"])]


def reward_unlocked_identity(data: dict) -> Identity:
    return _reward_identity(data, [])


def reward_redeemed_identity(data: dict) -> Identity:
    return _reward_identity(data, [clean(data.get("reward_variant_sku")) or ""])


def _reward_identity(data: dict, extra: list[str]) -> Identity:
    # The referral count tells repeated unlocks of a recurring reward apart.
    count = data.get("referrals")
    if count is None:
        count = data["subscriber"].get("tot_referrals")
    parts = [clean(data["subscriber"]["id"]), clean(data["reward"]["id"]), *extra]
    return [*parts, "" if count is None else str(count)]


def partner_referral_identity(data: dict) -> Identity:
    return _complete([clean((data.get("campaign") or {}).get("id")), _person_email(data)])


def offer_lead_identity(data: dict) -> Identity:
    return _complete([clean(data.get("offer_id")), _person_email(data)])


def sync_subscriber_identity(data: dict) -> Identity:
    contact = _person(data)
    # The status is part of the key so that a real status change is not dropped.
    return _complete(
        [
            clean(contact.get("id")) or clean_email(contact.get("email")),
            clean(contact.get("referral_status") or data.get("referral_status")),
        ]
    )


def _person(data: dict) -> dict:
    found = UNDOCUMENTED_PEOPLE.contact(data)
    return found[1] if found else {}


def _person_email(data: dict) -> str | None:
    return clean_email(_person(data).get("email"))


def _complete(parts: list[str | None]) -> Identity:
    return parts if all(parts) else None
