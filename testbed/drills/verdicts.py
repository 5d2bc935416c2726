"""What a drill measured: the store's events and deliveries, the sandbox's state and request
counts, and the one tally every drill ends with (`Tally`: accepted, done, failed, lost,
duplicate effects at the vendors, 429s)."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa

from relay.models import DeliveryStatus, Event, EventStatus
from relay.runtime import Runtime
from schemas.events import dedup_key, validate_event
from testbed.apps import TERMINAL, deliveries, events, sandbox_state
from testbed.drills.processes import Drill
from testbed.drills.traffic import Stream
from testbed.waiting import wait_for

HEAL_WITHIN_S = 60.0


def all_events_done(app) -> bool:
    try:
        return all(e.status == "done" for e in events(app))
    except Exception:  # the store itself may be the fault
        return False


def unsettled(app) -> int | None:
    """How many stored events are not in a terminal state yet; None while the store is away."""
    try:
        with Runtime.of(app).db.session() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(Event).where(Event.status.not_in(TERMINAL)))
    except Exception:  # the store itself may be the fault
        return None


def in_flight(app) -> list[int]:
    return [d.id for d in deliveries(app) if d.status == DeliveryStatus.IN_FLIGHT]


def vendor_requests(sandbox, vendor: str) -> list[dict]:
    return [r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == vendor]


def duplicate_effects(sandbox, subscribers: int) -> list[str]:
    """Everything the vendors hold twice, for `subscribers` reward_redeemed subscribers: contacts,
    note conversations, notes, Sprig event occurrences."""
    state = sandbox_state(sandbox)
    spruce, problems = state["spruce"], []
    emails = sorted(c["emailAddresses"][0]["value"] for c in spruce["contacts"])
    if emails != sorted(f"drill{n}@example.com" for n in range(subscribers)):
        problems.append(f"{len(emails)} Spruce contacts for {subscribers} subscribers")
    if len(spruce["conversations"]) != subscribers:
        problems.append(f"{len(spruce['conversations'])} note conversations for {subscribers} subscribers")
    notes = [len([i for i in spruce["items"].get(c["id"], []) if i["isInternalNote"]]) for c in spruce["conversations"]]
    if any(n != 1 for n in notes):
        problems.append(f"note conversations holding {sorted(set(notes))} notes")
    counts = [e["count"] for user in state["sprig"]["users"].values() for e in user["events"]]
    if len(counts) != subscribers or any(c != 1 for c in counts):
        problems.append(f"Sprig event counts {sorted(counts)[-5:]} for {subscribers} subscribers")
    return problems


@dataclass(frozen=True)
class Tally:
    """`accepted`: distinct webhooks answered 200; of those, `done` and `failed` (their event's
    terminal state) and `lost`: neither (never stored, or not finished when the drill ended);
    `duplicates`: effects a vendor holds more often than once (`excess_effects`); `throttled`:
    vendor answers with status 429 (the sandbox's request counts: unlike its request log, they
    are not cut at 10,000 entries)."""

    accepted: int
    done: int
    failed: int
    lost: int
    duplicates: int
    throttled: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0

    def line(self, name: str) -> str:
        return (
            f"drill {name}: accepted {self.accepted}, done {self.done}, failed {self.failed}, "
            f"lost {self.lost}, duplicates {self.duplicates}, 429s {self.throttled}"
        )


def assert_all_done(healed, accepted: int) -> None:
    """A drill's verdict: every accepted webhook done, none lost or failed, nothing twice."""
    tally = healed.tally
    assert (tally.lost, tally.duplicates) == (0, 0), healed
    assert (tally.accepted, tally.done, tally.failed) == (accepted, accepted, 0), healed
    assert healed.events == accepted and healed.healed_s is not None, healed


def webhook_key(payload: dict) -> str:
    """The key Relay stores the webhook's event under (its natural identity)."""
    event_type, data, errors = validate_event(payload)
    assert data is not None, f"the drills post valid events of handled types ({event_type}: {errors})"
    return dedup_key(event_type, data)


def tally(app, sandbox, accepted: list[dict]) -> Tally:
    """The drill's figures, from the store, the sandbox's state and its request counts."""
    keys = {webhook_key(payload) for payload in accepted}
    with Runtime.of(app).db.session() as session:
        stored = dict(session.execute(sa.select(Event.dedup_key, Event.status)).all())
    states = Counter(stored.get(key) for key in keys)
    done, failed = states[EventStatus.DONE], states[EventStatus.FAILED]
    throttled = sum(counts.get("429", 0) for counts in sandbox.stats().values())
    return Tally(len(keys), done, failed, len(keys) - done - failed, excess_effects(sandbox.snapshot()), throttled)


def vendor_effects(state: dict) -> dict[str, Counter]:
    """What the vendors hold, counted by subscriber (their email): Spruce contacts, note
    conversations and the internal notes in them; Sprig event occurrences by user and name."""
    spruce = state["spruce"]
    email_of = {
        c["id"]: c["emailAddresses"][0]["value"] if c["emailAddresses"] else c["id"] for c in spruce["contacts"]
    }
    effects = {kind: Counter() for kind in ("contacts", "conversations", "notes", "sprig events")}
    effects["contacts"].update(email_of.values())
    for conversation in spruce["conversations"]:
        whose = ",".join(sorted(email_of.get(i, i) for i in conversation["associatedContactIds"]))
        effects["conversations"][whose] += 1
        effects["notes"][whose] += sum(
            1 for item in spruce["items"].get(conversation["id"], []) if item["isInternalNote"]
        )
    for user_id, user in state["sprig"]["users"].items():
        for event in user["events"]:
            effects["sprig events"][(user_id, event["event"])] += event["count"]
    return effects


def excess_effects(state: dict) -> int:
    """Effects held more often than once: the drills send one event per subscriber, so each
    subscriber has one contact, one note conversation holding one note, and one occurrence of
    its Sprig event."""
    return sum(n - 1 for counts in vendor_effects(state).values() for n in counts.values() if n > 1)


@dataclass
class Healed:
    """What a drill measured: how long after the fault's end every event was done; `retried`:
    webhooks posted again (no answer, or a 5xx); `lease_waits`: deliveries that waited for a
    dead worker's lease to run out instead of being handed back; `failed_attempts`: runs that
    ended in an error (not deferred: a timeout, a 5xx, a killed worker); `deferrals`: runs that
    waited (the throttle, a 429, the breaker, a busy subscriber); `vendor_answers`: the
    sandbox's answers by vendor and status; `tally`: the drill's figures."""

    events: int
    healed_s: float | None
    answers: dict[int, int]
    duplicates: list[str]
    dead: list[str]
    retried: int = 0
    lease_waits: int = 0
    tally: Tally | None = None
    failed_attempts: int = 0
    deferrals: int = 0
    vendor_answers: dict[str, dict[str, int]] = field(default_factory=dict)


def verdict(
    drill: Drill,
    app,
    sandbox,
    stream: Stream,
    fault_ended: float,
    subscribers: int,
    watched: dict[str, subprocess.Popen],
    within_s: float = HEAL_WITHIN_S,
) -> Healed:
    """Waits for the stream to end and every event to settle, at most `within_s` after the
    fault's end (the stream at least 30 s), then measures."""
    deadline = fault_ended + within_s
    stream.wait(timeout=max(30.0, deadline - time.monotonic()))
    settled = wait_for(lambda: unsettled(app) == 0, timeout=max(0.0, deadline - time.monotonic()), interval=0.5)
    settled_s = time.monotonic() - fault_ended
    figures = tally(app, sandbox, stream.accepted)
    stored = len(events(app))
    healed_s = settled_s if settled and figures.done == figures.accepted == stored else None
    answers = {status: stream.answers.count(status) for status in sorted(set(stream.answers))}
    runs = deliveries(app)
    lease_waits = sum("lease expired" in (d.last_error or "") for d in runs)
    finished = (DeliveryStatus.SUCCEEDED, DeliveryStatus.SUPERSEDED)  # the last run did not fail
    failed_attempts = sum(d.attempts - d.deferrals - (d.status in finished) for d in runs)
    return Healed(
        stored,
        healed_s,
        answers,
        duplicate_effects(sandbox, subscribers),
        [name for name, process in watched.items() if process.poll() is not None],
        stream.retried,
        lease_waits,
        figures,
        failed_attempts,
        sum(d.deferrals for d in runs),
        sandbox.stats(),
    )
