"""Failures: failed deliveries grouped by cause, and replaying one group (the console's Failures
page; `relay events replay --failure-group`).

A cause, `FailureGroup`, is a delivery's destination, its vendor status (`last_status_code`), the
kind of error (`KINDS`: refused by the vendor, retries spent, too old, vendor not reached, or
Relay could not send it) and the first CAUSE_WORDS words of its error, without the vendor's
request id (`[req …]`, which tells otherwise equal errors apart) and without the "gave up after
…:" that the kind says already.

Identity. A group is named by its fields themselves, as one text that `FailureGroup.parse` reads
back (`spruce 400 refused: POST /contacts -> 400: invalid email`): the console's URLs carry it as
a query parameter and `relay events replay --failure-group` takes it. Not an opaque key (a hash
of the fields): a hash cannot be turned back into the fields, so finding its group would mean
reading failures until one hashes alike, and a group with no failure left would look like a bad
key. The fields hold no personal data: the worker scrubs `last_error` before storing it, and the
request id is cut off here.

Bounds. The page reads the deliveries that failed since `since` (the last DEFAULT_DAYS days unless
asked for 1 or 30), newest first, at most SCAN_LIMIT of them, through ix_deliveries_failed_finished
(finished_at of failed deliveries only); its counts are of what it read, and it says when there
was more. A group's own failures, which its replay sends again, are all of them since `since`,
read through the same index, filtered on destination and vendor status in SQL and on kind and
words here (cutting the request id off is a regular expression, not portable SQL). The console
pins `since` in its URLs, so a group's confirmation counts what the page counted, and newer ones;
the CLI's `--failure-group` has no window (its other filters narrow the events). The estimate a
confirmation shows is a dry run of at most ESTIMATE_EVENTS of the group's events, scaled.

Progress. A replay gives every delivery it sends again the same `replayed_at` and records it in
its audit entry (operations.replay.replay_progress): a replay's deliveries are counted from the
index on `replayed_at`, however many they are, where the entry itself lists only the first
audit.MAX_IDS ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from operations.audit import Actor
from operations.replay import ReplayResult, replay
from operations.stats import REQUEST_ID
from relay.models import Delivery, DeliveryStatus, utcnow
from relay.runtime import Runtime

WINDOW_DAYS = (1, 7, 30)
DEFAULT_DAYS = 7
# Failures a page reads at most: the newest, in its window.
SCAN_LIMIT = 5000
CAUSE_WORDS = 10
# A group's replay is estimated from a dry run of at most this many of its events.
ESTIMATE_EVENTS = 200
NO_ERROR = "(no error recorded)"

REFUSED, RETRIES_SPENT, TOO_OLD, NETWORK, RELAY = "refused", "retries-spent", "too-old", "network", "relay"
KINDS = {
    REFUSED: "refused by the vendor",
    RETRIES_SPENT: "retries spent",
    TOO_OLD: "too old to retry",
    NETWORK: "vendor not reached",
    RELAY: "Relay could not send it",
}
# workers.engine's words for a delivery it stopped retrying: by attempts, or by age.
_GAVE_UP = re.compile(r"^gave up after (?:(?P<attempts>\d+) failed attempts|[\d.]+ h): ")
_GROUP = re.compile(r"^(?P<destination>\S+) (?P<status>\S+) (?P<kind>\S+): (?P<cause>.+)$")
GROUP_FORM = "DESTINATION STATUS KIND: WORDS, e.g. 'spruce 400 refused: POST /contacts -> 400: invalid email'"


class BadGroup(ValueError):
    """A failure group's text that names no group; the message says what is wrong (never
    quoting the text, which a person typed)."""


@dataclass(frozen=True)
class FailureGroup:
    destination: str
    status: int | None  # the vendor's HTTP status, None when it gave none
    kind: str
    cause: str  # the error's first words

    @property
    def text(self) -> str:
        status = "-" if self.status is None else str(self.status)
        return f"{self.destination} {status} {self.kind}: {self.cause}"

    @property
    def kind_label(self) -> str:
        return KINDS[self.kind]

    @classmethod
    def parse(cls, text: str, destinations: Iterable[str]) -> FailureGroup:
        found = _GROUP.match(text.strip())
        if not found:
            raise BadGroup(f"a failure group reads {GROUP_FORM}")
        known = sorted(destinations)
        if found["destination"] not in known:
            raise BadGroup(f"the failure group's destination is not one of {', '.join(known)}")
        status = found["status"]
        if status != "-" and not (status.isdigit() and 100 <= int(status) <= 599):
            raise BadGroup("the failure group's status is an HTTP status (100 to 599), or - for none")
        if found["kind"] not in KINDS:
            raise BadGroup(f"the failure group's kind is one of {', '.join(KINDS)}")
        cause = " ".join(found["cause"].split())
        if len(cause.split()) > CAUSE_WORDS:
            raise BadGroup(f"the failure group's words are the error's first {CAUSE_WORDS} at most")
        return cls(found["destination"], None if status == "-" else int(status), found["kind"], cause)

    @classmethod
    def of(cls, destination: str, status: int | None, error: str | None) -> FailureGroup:
        """The group of a delivery that failed with this status and error."""
        text = REQUEST_ID.sub("", error or "").strip()
        gave_up = _GAVE_UP.match(text)
        if gave_up:
            kind = RETRIES_SPENT if gave_up["attempts"] else TOO_OLD
            text = text[gave_up.end() :]
        elif "-> network error" in text:
            kind = NETWORK
        elif status is not None:
            kind = REFUSED
        else:
            kind = RELAY
        return cls(destination, status, kind, " ".join(text.split()[:CAUSE_WORDS]) or NO_ERROR)


@dataclass
class GroupSummary:
    group: FailureGroup
    count: int
    first_seen: datetime
    last_seen: datetime
    example_event_id: int  # the event of its newest failure


@dataclass
class FailureScan:
    since: datetime
    groups: list[GroupSummary] = field(default_factory=list)  # newest failure first
    read: int = 0
    more: bool = False  # more failures since `since` than SCAN_LIMIT: the counts are of the newest


def window_start(days: int, now: datetime | None = None) -> datetime:
    """The start of a window of `days` days ending now, to the second (URLs carry it)."""
    return ((now or utcnow()) - timedelta(days=days)).replace(microsecond=0)


def parse_since(text: str) -> datetime:
    """A window's start as URLs carry it (ISO 8601 with its offset); ValueError naming the form."""
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("since is a date and time with its offset, e.g. 2026-12-01T09:30:00+00:00") from None
    if since.tzinfo is None:
        raise ValueError("since needs its offset, e.g. 2026-12-01T09:30:00+00:00")
    return since.astimezone(UTC)


def failure_groups(runtime: Runtime, since: datetime) -> FailureScan:
    """The deliveries failed since `since`, grouped by cause, the newest group first; at most
    SCAN_LIMIT of the newest failures are read."""
    query = (
        sa.select(
            Delivery.destination,
            Delivery.last_status_code,
            Delivery.last_error,
            Delivery.finished_at,
            Delivery.event_id,
        )
        .where(Delivery.status == DeliveryStatus.FAILED, Delivery.finished_at >= since)
        .order_by(Delivery.finished_at.desc())
        .limit(SCAN_LIMIT + 1)
    )
    with runtime.session() as session:
        rows = session.execute(query).all()
    scan = FailureScan(since, read=min(len(rows), SCAN_LIMIT), more=len(rows) > SCAN_LIMIT)
    by_group: dict[FailureGroup, GroupSummary] = {}
    for destination, status, error, finished_at, event_id in rows[:SCAN_LIMIT]:
        assert finished_at is not None  # the query asked for finished_at >= since
        group = FailureGroup.of(destination, status, error)
        summary = by_group.get(group)
        if summary is None:
            by_group[group] = GroupSummary(group, 1, finished_at, finished_at, event_id)
        else:
            summary.count += 1
            summary.first_seen = finished_at
    scan.groups = list(by_group.values())
    return scan


def group_event_ids(runtime: Runtime, group: FailureGroup, since: datetime | None = None) -> list[int]:
    """The events whose delivery to the group's destination failed with its cause (since
    `since`, when given), oldest first: one delivery each (one per event and destination)."""
    status = Delivery.last_status_code.is_(None) if group.status is None else Delivery.last_status_code == group.status
    query = sa.select(Delivery.event_id, Delivery.last_error).where(
        Delivery.status == DeliveryStatus.FAILED, Delivery.destination == group.destination, status
    )
    if since is not None:
        query = query.where(Delivery.finished_at >= since)
    with runtime.session() as session:
        rows = session.execute(query).all()
    return sorted(
        event_id for event_id, error in rows if FailureGroup.of(group.destination, group.status, error) == group
    )


@dataclass
class GroupEstimate:
    """What replaying a group would do: a dry run (operations.replay) of its events, or of an
    even sample of ESTIMATE_EVENTS of them, its counts then scaled to all of them."""

    events: int  # the group's events (one failed delivery each)
    sampled: int  # the events the dry run read
    result: ReplayResult

    @property
    def deliveries(self) -> int:
        return sum(self.result.deliveries.values())


def estimate_group_replay(runtime: Runtime, group: FailureGroup, since: datetime | None, actor: Actor) -> GroupEstimate:
    """A dry run of the group's replay. A dry run reads each event and checks its payload (about
    0.4 ms an event on the 2-core development machine): above ESTIMATE_EVENTS events, an even
    sample of them is read, so that a page with the estimate answers in well under 200 ms."""
    event_ids = group_event_ids(runtime, group, since)
    step = -(-len(event_ids) // ESTIMATE_EVENTS)  # ceil: at most ESTIMATE_EVENTS in the sample
    sample = event_ids[::step] if step > 1 else event_ids
    result = replay(runtime, sample, force=False, dry_run=True, destination=group.destination, actor=actor)
    if len(sample) < len(event_ids):
        scale = len(event_ids) / len(sample)
        for counter in (result.deliveries, result.vendor_calls, result.skipped):
            for key, count in counter.items():
                counter[key] = round(count * scale)
        result.events = round(result.events * scale)
    return GroupEstimate(len(event_ids), len(sample), result)


def replay_group(runtime: Runtime, group: FailureGroup, since: datetime | None, actor: Actor) -> ReplayResult:
    """Replay the group's failed deliveries through operations.replay, audited as `actor`'s with
    the group; with nothing to replay, nothing is done (and nothing audited)."""
    event_ids = group_event_ids(runtime, group, since)
    if not event_ids:
        return ReplayResult()
    details = {"failure_group": group.text, "failed_since": since.isoformat() if since else None}
    return replay(
        runtime, event_ids, force=False, dry_run=False, destination=group.destination, actor=actor, details=details
    )
