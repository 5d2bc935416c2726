"""Who an event names, as keyed hashes stored beside it (the `event_subjects` table).

Questions like "has Relay heard of this subscriber?" (`relay backfill`) used to look inside
stored payloads by JSON path. Sealed payloads (relay.sealing) cannot be looked into, and JSON
paths use no index, so each event's subscriber ids and emails are also stored as digests,
written in the same transaction as the event, and looked up by digest (indexed).

A digest is HMAC-SHA256 keyed with RELAY_LOOKUP_KEY when it is set, plain SHA-256 otherwise.
Without the lookup key anyone holding the database can hash a known email and find its
events; with it, the digests say nothing to someone who has only the database. The same digest
keys the identity map's email-only subscribers (workers.identity). Emails are compared
trimmed and lower-cased, ids trimmed.

Which names: in every event, valid or not, whatever its type, the `id` and `email` of each
object any event spec declares a person under (schemas.events.person_places: `subscriber`,
`referrer`, the undocumented events' `lead` and `referral`, and any key a new type declares), and
a top-level `email`. Beside them, the referral status the event states (not personal data, kept
in clear): the first the undocumented objects state, else the top-level one.
"""

from __future__ import annotations

import hashlib
import hmac

from schemas.events import PersonPlaces, person_places
from schemas.values import clean, clean_email

ID, EMAIL = "id", "email"
MAX_STATUS_LENGTH = 100


def digest(value: str, lookup_key: str | None) -> str:
    """The stored form of an id or email (normalise it first: `names_in` and callers do)."""
    data = value.encode()
    if lookup_key:
        return hmac.new(lookup_key.encode(), data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def email_digest(email: str, lookup_key: str | None) -> str:
    return digest(email.strip().lower(), lookup_key)


def id_digest(subscriber_id: str, lookup_key: str | None) -> str:
    return digest(subscriber_id.strip(), lookup_key)


def names_in(payload, places: PersonPlaces) -> set[tuple[str, str]]:
    """(kind, normalised value) of every subscriber id and email the payload names."""
    if not isinstance(payload, dict):
        return set()
    names = set()
    for key in places.keys:
        person = payload.get(key)
        if isinstance(person, dict):
            names.add((ID, clean(person.get("id"))))
            names.add((EMAIL, clean_email(person.get("email"))))
    if places.top_level_email:
        names.add((EMAIL, clean_email(payload.get("email"))))
    return {(kind, value) for kind, value in names if value}


def stated_status(payload, places: PersonPlaces) -> str | None:
    """The referral status the payload states, if it states one as text."""
    if not isinstance(payload, dict):
        return None
    people = (payload.get(key) for key in places.contact_keys)
    stated = [p.get("referral_status") for p in people if isinstance(p, dict)]
    first = next((s for s in [*stated, payload.get("referral_status")] if s is not None), None)
    return first[:MAX_STATUS_LENGTH] if isinstance(first, str) else None


def subject_rows(payload, lookup_key: str | None) -> list[dict]:
    """The event_subjects rows of an event with this payload (without its event_id)."""
    places = person_places()
    status = stated_status(payload, places)
    return [
        {"kind": kind, "digest": digest(value, lookup_key), "referral_status": status}
        for kind, value in sorted(names_in(payload, places))
    ]
