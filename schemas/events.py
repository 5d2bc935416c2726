"""The event registry: one spec per SparkLoop event type, the one table to edit for a new one.

A spec says how a payload of its type is validated (its schema), what makes two payloads the
same event (its identity: the de-duplication key's parts) and where it names people (the keys of
the subscribers it affects, in delivery order). What each destination receives for it is the
destination's to say (relay.destinations: workers/<vendor>/ declares it).
Relay's intake, delivery engine, subject digests, erasure and operator commands all read it from
here.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from marshmallow import Schema, ValidationError

from schemas import sparkloop
from schemas.sparkloop import (
    REFERRAL_PEOPLE,
    REWARD_PEOPLE,
    UNDOCUMENTED_PEOPLE,
    Identity,
    People,
    PeopleAt,
)

MISSING_MESSAGE = "Missing data for required field."
# The events table stores the type in a 100-character column.
MAX_TYPE_LENGTH = 100


@dataclass(frozen=True)
class EventSpec:
    schema: Schema
    identity: Callable[[dict], Identity]
    people: PeopleAt

    def subscribers(self, data: dict) -> People:
        """The people a valid payload of this type is about, in delivery order."""
        return self.people.subscribers(data)


EVENTS: dict[str, EventSpec] = {
    "new_referral": EventSpec(
        sparkloop.NewReferralSchema(),
        sparkloop.referral_identity,
        REFERRAL_PEOPLE,
    ),
    "new_partner_pending_referral": EventSpec(
        sparkloop.PartnerReferralSchema(),
        sparkloop.partner_referral_identity,
        UNDOCUMENTED_PEOPLE,
    ),
    "new_partner_referral": EventSpec(
        sparkloop.PartnerReferralSchema(),
        sparkloop.partner_referral_identity,
        UNDOCUMENTED_PEOPLE,
    ),
    "new_offer_lead": EventSpec(
        sparkloop.OfferLeadSchema(),
        sparkloop.offer_lead_identity,
        UNDOCUMENTED_PEOPLE,
    ),
    "reward_unlocked": EventSpec(
        sparkloop.RewardUnlockedSchema(),
        sparkloop.reward_unlocked_identity,
        REWARD_PEOPLE,
    ),
    "reward_redeemed": EventSpec(
        sparkloop.RewardRedeemedSchema(),
        sparkloop.reward_redeemed_identity,
        REWARD_PEOPLE,
    ),
    "sync_subscriber": EventSpec(
        sparkloop.SyncSubscriberSchema(),
        sparkloop.sync_subscriber_identity,
        UNDOCUMENTED_PEOPLE,
    ),
}


@dataclass(frozen=True)
class PersonPlaces:
    """Every place any event type declares a person, for the readers of stored payloads
    (relay.subjects, workers.erasure). They look in all of them, in every event, whatever its
    type, valid or not: the store holds invalid events and types no spec describes."""

    keys: tuple[str, ...]  # objects that describe a person
    about: tuple[str, ...]  # of those, the person an event is about, most likely first
    contact_keys: tuple[str, ...]  # of those, the undocumented ones (PeopleAt.contact_keys)
    top_level_email: bool


def person_places() -> PersonPlaces:
    """Read from EVENTS on each call, so that a type registered later is seen (the intake calls
    it for every webhook: gathered once per set of declarations)."""
    return _gathered(tuple(spec.people for spec in EVENTS.values()))


@functools.lru_cache(maxsize=8)
def _gathered(declared: tuple[PeopleAt, ...]) -> PersonPlaces:
    return PersonPlaces(
        keys=_in_order(people.keys for people in declared),
        about=_in_order(people.about for people in declared),
        contact_keys=_in_order(people.contact_keys for people in declared),
        top_level_email=any(people.top_level_email for people in declared),
    )


def _in_order(groups: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(key for group in groups for key in group))


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
        return event_type, None, err.normalized_messages()


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
