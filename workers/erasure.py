"""Erasure requests (`relay subscribers forget`): everything of one person in Relay's store goes,
and on request Sprig is asked to purge them too.

Where a person's data lives in the store, and what happens to it:

- Their own events (they are the subscriber the event is about): deleted, with the payload, the
  validation errors, every delivery (its errors, traces, progress: vendor ids; its attempts, by
  ON DELETE CASCADE) and the event's subject digests. A delivery not yet finished is deleted
  with them, so nothing is sent later.
- Events about someone else that name them too (a new_referral names its referrer; an
  undocumented event may name a second person): the other person's event, so it stays. Their
  part is anonymized: the object that describes them becomes `{"erased": true}` (a top-level
  email becomes null), their subject digests are deleted, their strings are removed from the
  event's errors and its deliveries' errors (their attempts' too), and the de-duplication key
  (an unkeyed hash of both subscribers' ids) is replaced by a random one. Deleting these events would delete the
  other person's data; keeping the person in them would keep them. Such an event's unfinished
  deliveries are ended, failed with a reason that says so: they would send the erased person
  (Sprig upserts the referrer) or their payload no longer validates. SparkLoop redelivering
  that webhook would be stored as a new event: with the erased person's data, as any new
  webhook about them would be.
- What each destination remembers of them (destination_links, workers.identity): Spruce's
  contact and note conversation ids, the versions of their Sprig attributes, any destination's
  own, keyed by id or email digest (keyed and unkeyed): deleted.
- Redis holds nothing to erase: the subject locks are digests with a 20 s lease, the queue's
  messages carry delivery ids, the metrics carry vendors, destinations and outcomes.
- Spruce's contact is the practice's clinical record: Relay does not delete it.

Who they are: the operator gives an email or a SparkLoop subscriber id; every event naming it
(found by its digest, relay.subjects) also tells the person's other ids and emails, and events
naming those are theirs too (a few rounds at most).

Nothing of theirs is sent while the erasure runs: it holds the person's subject locks
(workers.locks) for every destination, the locks a delivery takes before it sends, from before
the Sprig purge until the store is committed. A delivery that claimed its row before and takes
the lock after finds its claim gone (deleted or ended here) and sends nothing (workers.engine
checks its claim once it holds the locks).

The vendors asked to erase them too (`--purge DESTINATION`, e.g. Sprig) are asked first, so
that a refusal or an outage leaves the store as it was and the same command can run again (the
store may be the only place that knows the person's Sprig userId). Running it twice is
harmless: the second run finds nothing in the store and asks Sprig again (a Sprig that
refuses, say with a 400 for visitors it no longer holds, as a third-party client reports, makes
the command exit 1 with the store already empty).

Output and logs name the person by `reference()`, a keyed digest, never the email or id.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relay.config import Config
from relay.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    DestinationLink,
    Event,
    EventStatus,
    EventSubject,
    utcnow,
)
from relay.runtime import Runtime
from relay.subjects import EMAIL, ID, digest, email_digest, id_digest
from schemas.events import person_places
from schemas.personal import map_leaves, personal_strings
from schemas.values import clean, clean_email
from workers import identity
from workers.locks import subject_locks
from workers.outcomes import Deferred
from workers.vendor_errors import Redactor

log = logging.getLogger("relay.erasure")

ERASED = {"erased": True}
HALTED = "not sent: it names a person whose data was erased (relay subscribers forget)"
MAX_ROUNDS = 5
BATCH = 500
LOCK_WAIT_S = 30.0
_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ID_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")


class Busy(Exception):
    """A delivery for this person held their lock for longer than LOCK_WAIT_S."""


@dataclass(frozen=True)
class Person:
    ids: frozenset[str] = frozenset()
    emails: frozenset[str] = frozenset()

    @classmethod
    def given(cls, text: str) -> Person:
        """The person an operator names: an email or a subscriber id. Raises ValueError naming
        the problem (never quoting the value)."""
        value = (text or "").strip()
        if not value:
            raise ValueError("is empty: give an email or a SparkLoop subscriber id")
        if "@" in value:
            if not _EMAIL_SHAPE.match(value):
                raise ValueError("is not an email address (one @, a domain with a dot, no spaces)")
            return cls(emails=frozenset({value.lower()}))  # clean_email: already trimmed
        if not _ID_SHAPE.match(value):
            raise ValueError("is neither an email nor a subscriber id (letters, digits, _ . : -)")
        return cls(ids=frozenset({value}))

    def matches(self, contact) -> bool:
        return isinstance(contact, dict) and (
            clean(contact.get("id")) in self.ids or clean_email(contact.get("email")) in self.emails
        )

    def subject_keys(self, lookup_key: str | None) -> list[str]:
        """Their keys as the engine locks them and the identity map stores them
        (workers.identity.subscriber_key), with the unkeyed email digest of older links."""
        keys = {identity.id_key(value) for value in self.ids}
        for email in self.emails:
            keys |= {identity.email_key(email, lookup_key), identity.email_key(email, None)}
        return sorted(keys)


def reference(given: Person, config: Config) -> str:
    """How output and logs name the person the operator gave (Person.given): a keyed digest
    (RELAY_LOOKUP_KEY, else the webhook token; unkeyed only when neither is set)."""
    value = min(given.emails or given.ids)
    key = config.lookup_key or (config.webhook_tokens[0] if config.webhook_tokens else None)
    return "person-" + digest("relay erasure request:" + value, key)[:16]


@dataclass
class ErasurePlan:
    person: Person
    own: list[int] = field(default_factory=list)  # their events: deleted
    others: list[int] = field(default_factory=list)  # someone else's naming them: anonymized
    deliveries: int = 0  # of their events, deleted with them
    unsent: int = 0  # of those, not finished: never sent
    halted: int = 0  # unfinished deliveries of `others`: ended
    links: list[int] = field(default_factory=list)
    strings: set[str] = field(default_factory=set)  # their values, removed from errors

    @property
    def empty(self) -> bool:
        return not (self.own or self.others or self.links)

    def counts(self) -> dict[str, int]:
        return {
            "events_deleted": len(self.own),
            "events_anonymized": len(self.others),
            "deliveries_deleted": self.deliveries,
            "unsent_deliveries_deleted": self.unsent,
            "deliveries_halted": self.halted,
            "identity_links_deleted": len(self.links),
        }


def identify(session: Session, person: Person, lookup_key: str | None) -> tuple[Person, dict[int, Event]]:
    """The person with every id and email their events tell, and those events; reads only."""
    seen: dict[int, Event] = {}
    for _ in range(MAX_ROUNDS):
        new = [event_id for event_id in _naming(session, person, lookup_key) if event_id not in seen]
        if not new:
            break
        for event in _load(session, new):
            seen[event.id] = event
            person = _widened(person, event.payload)
    return person, seen


def plan(session: Session, person: Person, lookup_key: str | None) -> ErasurePlan:
    """What the erasure would change; reads only."""
    person, seen = identify(session, person, lookup_key)
    result = ErasurePlan(person)
    for event in sorted(seen.values(), key=lambda e: e.id):
        if _theirs(person, event.payload):
            result.own.append(event.id)
        else:
            result.others.append(event.id)
        result.strings |= _their_strings(person, event.payload)
    result.strings |= person.ids | person.emails
    for ids in _batches(result.own):
        rows = session.execute(sa.select(Delivery.status).where(Delivery.event_id.in_(ids))).scalars().all()
        result.deliveries += len(rows)
        result.unsent += sum(status not in DeliveryStatus.TERMINAL for status in rows)
    for ids in _batches(result.others):
        result.halted += (
            session.scalar(
                sa.select(sa.func.count())
                .select_from(Delivery)
                .where(Delivery.event_id.in_(ids), Delivery.status.not_in(DeliveryStatus.TERMINAL))
            )
            or 0
        )
    result.links = list(
        session.scalars(
            sa.select(DestinationLink.id).where(DestinationLink.subscriber_key.in_(person.subject_keys(lookup_key)))
        )
    )
    return result


def erase(session: Session, found: ErasurePlan, lookup_key: str | None) -> None:
    """Apply the plan in the session's transaction (the caller commits)."""
    for ids in _batches(found.own):
        session.execute(sa.delete(EventSubject).where(EventSubject.event_id.in_(ids)))
        session.execute(sa.delete(Delivery).where(Delivery.event_id.in_(ids)))
        session.execute(sa.delete(Event).where(Event.id.in_(ids)))
    redact = Redactor(found.strings)
    digests = _digests(found.person, lookup_key)
    for ids in _batches(found.others):
        for event in _load(session, ids):
            _anonymize(session, event, found.person, redact, digests)
    if found.links:
        session.execute(sa.delete(DestinationLink).where(DestinationLink.id.in_(found.links)))
    # A link a delivery saved after the plan was read (it held the lock before the erasure did).
    session.execute(
        sa.delete(DestinationLink).where(DestinationLink.subscriber_key.in_(found.person.subject_keys(lookup_key)))
    )


@contextmanager
def locked(person: Person, runtime: Runtime, wait_s: float | None = None) -> Iterator[list]:
    """Hold the person's subject locks (in the runtime's Redis) for every destination, so that no
    delivery for them sends meanwhile; waits (bounded) for one that is sending. Raises Busy."""
    client, keys = runtime.redis, person.subject_keys(runtime.config.lookup_key)
    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while True:
        with ExitStack() as stack:
            try:
                held = [
                    lock
                    for name in runtime.config.destinations
                    for lock in stack.enter_context(subject_locks(client, name, keys))
                ]
            except Deferred:
                held = None
            if held is not None:
                yield held
                return
        if time.monotonic() >= deadline:
            raise Busy(f"a delivery for this person kept running for {wait_s:.0f} s")
        time.sleep(0.2)


# --- finding them ---------------------------------------------------------------------------


def _digests(person: Person, lookup_key: str | None) -> dict[str, set[str]]:
    """Their stored digests by kind, under the lookup key and unkeyed (events stored before it
    was set and not re-digested by `relay keys rotate --digests`)."""
    keys = {lookup_key, None}
    return {
        ID: {id_digest(value, key) for value in person.ids for key in keys},
        EMAIL: {email_digest(value, key) for value in person.emails for key in keys},
    }


def _naming(session: Session, person: Person, lookup_key: str | None) -> set[int]:
    conditions = [
        sa.and_(EventSubject.kind == kind, EventSubject.digest.in_(values))
        for kind, values in _digests(person, lookup_key).items()
        if values
    ]
    return set(session.scalars(sa.select(EventSubject.event_id).where(sa.or_(*conditions)).distinct()))


def _load(session: Session, event_ids: list[int]) -> list[Event]:
    return [
        event
        for ids in _batches(sorted(event_ids))
        for event in session.scalars(sa.select(Event).where(Event.id.in_(ids)).order_by(Event.id))
    ]


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]


def _contacts(payload) -> list[tuple[str, dict]]:
    """The objects of the payload that describe a person, where any event spec declares one
    (schemas.events.person_places, as relay.subjects reads them), with the top-level email
    given to an undocumented object that has none (as schemas.sparkloop.FirstPersonAt does),
    and the top-level email as ("email", {"email": ...})."""
    if not isinstance(payload, dict):
        return []
    places = person_places()
    top_email = payload.get("email") if places.top_level_email else None
    found = []
    for key in places.keys:
        contact = payload.get(key)
        if isinstance(contact, dict):
            if key in places.contact_keys and contact.get("email") is None and clean(top_email):
                contact = {**contact, "email": top_email}
            found.append((key, contact))
    if clean(top_email):
        found.append(("email", {"email": top_email}))
    return found


def _widened(person: Person, payload) -> Person:
    ids, emails = set(person.ids), set(person.emails)
    for _, contact in _contacts(payload):
        if person.matches(contact):
            ids |= {value for value in [clean(contact.get("id"))] if value}
            emails |= {value for value in [clean_email(contact.get("email"))] if value}
    return Person(frozenset(ids), frozenset(emails))


def _owner(payload) -> dict | None:
    """The person the event is about: the first contact under a key that declares one
    (person_places().about: `subscriber` first) that identifies someone, else the top-level
    email."""
    contacts = dict(_contacts(payload))
    for key in person_places().about:
        contact = contacts.get(key)
        if contact is not None and (clean(contact.get("id")) or clean(contact.get("email"))):
            return contact
    return {"email": clean(contacts["email"]["email"])} if "email" in contacts else None


def _theirs(person: Person, payload) -> bool:
    """Their own event, unless someone else is the person it is about."""
    owner = _owner(payload)
    return owner is None or person.matches(owner)


def _their_strings(person: Person, payload) -> set[str]:
    return set().union(
        *(
            personal_strings(contact) | {str(contact.get("id") or "")}
            for _, contact in _contacts(payload)
            if person.matches(contact)
        )
    ) - {""}


# --- anonymizing someone else's event ---------------------------------------------------------


def _anonymize(session: Session, event: Event, person: Person, redact: Redactor, digests: dict[str, set[str]]) -> None:
    payload = dict(event.payload)
    for key, contact in _contacts(payload):
        if person.matches(contact):
            payload[key] = None if key == "email" else dict(ERASED)
    event.payload = payload
    if event.errors is not None:
        event.errors = _redacted(event.errors, redact)
    event.dedup_key = f"{event.type[:100]}:erased-{secrets.token_hex(16)}"
    for kind, values in digests.items():
        if values:
            session.execute(
                sa.delete(EventSubject).where(
                    EventSubject.event_id == event.id, EventSubject.kind == kind, EventSubject.digest.in_(values)
                )
            )
    now, halted = utcnow(), False
    for delivery in session.scalars(sa.select(Delivery).where(Delivery.event_id == event.id)):
        if delivery.last_error:
            delivery.last_error = redact(delivery.last_error)
        if delivery.status not in DeliveryStatus.TERMINAL:
            delivery.status, delivery.finished_at, delivery.lease_expires_at = DeliveryStatus.FAILED, now, None
            delivery.last_error, delivery.last_error_trace, delivery.throttle_slot = HALTED, None, None
            halted = True
    attempts = (
        sa.select(DeliveryAttempt)
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(Delivery.event_id == event.id, DeliveryAttempt.error.is_not(None))
    )
    for attempt in session.scalars(attempts):  # their errors, as the deliveries' own
        attempt.error = redact(attempt.error or "")
    if halted:
        event.status = EventStatus.FAILED


def _redacted(value, redact: Redactor):
    return map_leaves(value, lambda leaf, _key: redact(leaf) if isinstance(leaf, str) else leaf)
