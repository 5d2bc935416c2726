"""Requests about one subscriber's data: an erasure (`forget`: workers.erasure says what goes and
what stays) and dropping what the destinations remember of them, their ids and versions (`unlink`:
workers.identity). Both take the person's delivery locks, so that no delivery for them runs
meanwhile; both raise workers.erasure.Busy when one holds them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from operations import audit
from operations.audit import Actor
from relay.destinations import Destination
from relay.runtime import Runtime
from workers import erasure, identity
from workers.outcomes import Deferred
from workers.vendor_errors import VendorError


def forget_plan(runtime: Runtime, person: erasure.Person) -> erasure.ErasurePlan:
    """What an erasure of `person` would delete and anonymize now."""
    with runtime.session() as session:
        return erasure.plan(session, person, runtime.config.lookup_key)


@dataclass(frozen=True)
class Forgotten:
    done: erasure.ErasurePlan
    # Each vendor asked (`purge`): its request ids.
    requests: dict[str, list[str]]


def remembering(runtime: Runtime) -> list[str]:
    """The destinations that remember something of a subscriber (Destination.remembers)."""
    return [name for name, destination in runtime.destinations.items() if destination.remembers]


def erasing_vendors(runtime: Runtime) -> list[str]:
    """The configured destinations that take an erasure request of their own."""
    return [name for name, destination in runtime.config.configured().items() if destination.erasure]


def vendor_asks(runtime: Runtime, person: erasure.Person, vendor: str) -> dict[str, int]:
    """What an erasure request would ask `vendor` about `person`, counted."""
    step = runtime.destinations[vendor].erasure
    assert step is not None, f"{vendor} takes no erasure request"
    return step.asked(person, runtime.config)


def forget(
    runtime: Runtime, person: erasure.Person, *, named: erasure.Person, actor: Actor, purge: Sequence[str] = ()
) -> Forgotten:
    """Erase `person` from the store (planned again under their locks), after asking each vendor
    in `purge` (destinations with an erasure step) to erase them too; a vendor's refusal
    (VendorError, Deferred) changes nothing in the store. Audited as `actor`'s, the person by
    the digest of how the operator `named` them (erasure.reference, as the CLI prints it)."""
    config = runtime.config
    with audit.audited(runtime, actor, "subscribers.forget", person=erasure.reference(named, config)) as entry:
        entry.details["purge"] = list(purge)
        try:
            with erasure.locked(person, runtime) as locks, runtime.session() as session:
                found = erasure.plan(session, person, config.lookup_key)
                requests = {}
                for vendor in purge:
                    step = runtime.destinations[vendor].erasure
                    assert step is not None, f"{vendor} takes no erasure request"
                    requests[vendor] = step.request(found.person, runtime)
                for lock in locks:  # the vendors' calls may have taken part of their lease
                    lock.reacquire()
                erasure.erase(session, found, config.lookup_key)
                session.commit()
        except erasure.Busy:
            entry.refused("busy: a delivery for them holds their locks")
            raise
        except VendorError as exc:
            status = f" (HTTP {exc.status})" if exc.status else ""
            entry.failed(f"{exc.vendor} did not take the erasure request{status}")
            raise
        except Deferred:
            entry.failed("a vendor deferred the erasure request")
            raise
        entry.details |= found.counts() | {f"{vendor}_requests": len(ids) for vendor, ids in requests.items()}
    return Forgotten(found, requests)


@dataclass(frozen=True)
class Links:
    """What Relay keeps of a person at the vendors: `held` names the links of the destinations
    asked about; `known` says whether the store knows them at all (an event or any link);
    `reference` is the digest of the person as the operator named them (erasure.reference)."""

    person: erasure.Person
    keys: list[str]
    known: bool
    held: list[str]
    reference: str


def links(runtime: Runtime, subscriber: erasure.Person, destinations: list[str]) -> Links:
    lookup_key = runtime.config.lookup_key
    with runtime.session() as session:
        person, events = erasure.identify(session, subscriber, lookup_key)
        keys = person.subject_keys(lookup_key)
        known = bool(events) or identity.kept(session, keys)
        held = identity.held(session, keys, _named(runtime, destinations))
        return Links(person, keys, known, held, erasure.reference(subscriber, runtime.config))


def unlink(runtime: Runtime, found: Links, destinations: list[str], *, actor: Actor) -> list[str]:
    """Drop the links of `destinations`, under the person's locks; what was dropped. Raises
    redis.RedisError when the locks cannot be taken (nothing changed). Audited as `actor`'s."""
    with audit.audited(runtime, actor, "subscribers.unlink", person=found.reference) as entry:
        entry.details["destinations"] = destinations
        try:
            # A delivery for them finishes before, or starts after.
            with erasure.locked(found.person, runtime), runtime.session() as session:
                dropped = identity.unlink(session, found.keys, _named(runtime, destinations))
                session.commit()
        except erasure.Busy:
            entry.refused("busy: a delivery for them holds their locks")
            raise
        entry.details["dropped"] = dropped
    return dropped


def _named(runtime: Runtime, names: list[str]) -> list[Destination]:
    return [runtime.destinations[name] for name in names]
