"""The event registry: one spec per SparkLoop event type, the one table to edit for a new one.

A spec says how a payload of its type is validated (its schema), what makes two payloads the
same event (its identity: the de-duplication key's parts), whom it is about (the subscribers
it affects, in delivery order) and what each destination receives for it. Relay's intake,
delivery engine and operator commands all read it from here.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from marshmallow import Schema, ValidationError

from schemas import sparkloop
from schemas.sparkloop import Identity, People
from schemas.sprig import SprigUser, reward_attributes
from schemas.spruce import SpruceContact, SpruceNote, reward_redeemed_note, reward_unlocked_note

DESTINATIONS = ("sprig", "spruce")
MISSING_MESSAGE = "Missing data for required field."
# The events table stores the type in a 100-character column.
MAX_TYPE_LENGTH = 100

Sends = SprigUser | SpruceContact | SpruceNote


@dataclass(frozen=True)
class EventSpec:
    schema: Schema
    identity: Callable[[dict], Identity]
    subscribers: Callable[[dict], People]
    # destination -> what it receives; the keys are the destinations the event goes to.
    sends: Mapping[str, Sends]

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(self.sends)


EVENTS: dict[str, EventSpec] = {
    "new_referral": EventSpec(
        sparkloop.NewReferralSchema(), sparkloop.referral_identity, sparkloop.referral_people,
        {"sprig": SprigUser(), "spruce": SpruceContact()},
    ),
    "new_partner_pending_referral": EventSpec(
        sparkloop.PartnerReferralSchema(), sparkloop.partner_referral_identity,
        sparkloop.undocumented_people, {"sprig": SprigUser()},
    ),
    "new_partner_referral": EventSpec(
        sparkloop.PartnerReferralSchema(), sparkloop.partner_referral_identity,
        sparkloop.undocumented_people, {"sprig": SprigUser(), "spruce": SpruceContact()},
    ),
    "new_offer_lead": EventSpec(
        sparkloop.OfferLeadSchema(), sparkloop.offer_lead_identity, sparkloop.undocumented_people,
        {"sprig": SprigUser()},
    ),
    "reward_unlocked": EventSpec(
        sparkloop.RewardUnlockedSchema(), sparkloop.reward_unlocked_identity,
        sparkloop.reward_people,
        {"sprig": SprigUser(reward_attributes), "spruce": SpruceNote(reward_unlocked_note)},
    ),
    "reward_redeemed": EventSpec(
        sparkloop.RewardRedeemedSchema(), sparkloop.reward_redeemed_identity,
        sparkloop.reward_people,
        {"sprig": SprigUser(reward_attributes), "spruce": SpruceNote(reward_redeemed_note)},
    ),
    "sync_subscriber": EventSpec(
        sparkloop.SyncSubscriberSchema(), sparkloop.sync_subscriber_identity,
        sparkloop.undocumented_people, {"sprig": SprigUser()},
    ),
}

# What a destination receives when RELAY_ROUTES sends it an event type whose spec does not
# name it.
DEFAULT_SENDS: dict[str, Sends] = {"sprig": SprigUser(), "spruce": SpruceContact()}


def sends(event_type: str, destination: str) -> Sends:
    spec = EVENTS.get(event_type)
    return (spec.sends.get(destination) if spec else None) or DEFAULT_SENDS[destination]


def affected_subscribers(event_type: str, data: dict) -> People:
    return EVENTS[event_type].subscribers(data)


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
    spec = EVENTS.get(event_type)
    if spec is None:
        return event_type, None, None
    try:
        return event_type, spec.schema.load(payload), None
    except ValidationError as err:
        return event_type, None, err.messages


def dedup_key(event_type: str, data: dict) -> str:
    """A fixed-length key from the event's natural identity; personal data only hashed."""
    parts = EVENTS[event_type].identity(data)
    if parts is None:
        material = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    else:
        material = json.dumps([event_type, *parts], ensure_ascii=False)
    return f"{event_type[:MAX_TYPE_LENGTH]}:{hashlib.sha256(material.encode()).hexdigest()}"


def raw_dedup_key(body: bytes) -> str:
    return "raw:" + hashlib.sha256(body).hexdigest()
