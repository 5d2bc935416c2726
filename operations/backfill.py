"""Backfill: recreate from SparkLoop's API what an outage kept from Relay (`relay backfill`).

SparkLoop retries a failed webhook only for a few minutes (3 times over 5 minutes, says its older
webhooks page, https://support.sparkloop.app/product/features/webhooks), so a longer outage
loses events for good on its side. Its API v2 lists subscribers newest `created_at` first and
has no "updated at" (https://docs.sparkloop.app/api-v2/endpoints/subscribers,
https://docs.sparkloop.app/api-v2/objects-schema/subscriber-object), so "changed since" can only
mean *created* since:
a status that moved later (pending → verified) on an older subscriber is invisible to it.
Each subscriber created since DATE becomes a `sync_subscriber` event (source "backfill") that
Relay delivers like a webhook, unless Relay already holds an event naming that subscriber
received at or after their creation (the webhook that did arrive, or an earlier backfill) and
no newer referral status was lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from operations.sparkloop import api_client
from relay import storable, subjects
from relay.ingest import ingest
from relay.models import Event, EventSubject
from relay.runtime import Runtime
from schemas.events import dedup_key, validate_event
from schemas.values import of_type
from workers.sparkloop.client import SparkLoopClient, SubscriberPage
from workers.sparkloop.retry import call_patiently

# SparkLoop's clock stamps created_at, Relay's stamps received_at: an event received a little
# "before" the subscriber was created is still about them.
CLOCK_SKEW = timedelta(minutes=2)
OnRetry = Callable[[int, str, float], None]


# --- input ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """A subscriber from the API, with what the backfill needs parsed out."""

    uuid: str
    email: str  # lower-cased, for matching
    created_at: datetime
    row: dict

    @classmethod
    def parse(cls, row: dict) -> Listed | None:
        uuid, email, created = row.get("uuid"), row.get("email"), row.get("created_at")
        if not (isinstance(uuid, str) and uuid.strip() and isinstance(email, str) and email.strip()):
            return None
        if not isinstance(created, str):
            return None
        try:
            created_at = datetime.fromisoformat(created)
        except ValueError:
            return None
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
        return cls(uuid.strip(), email.strip().lower(), created_at, row)


def sync_subscriber_payload(listed: Listed) -> dict:
    """The API's Subscriber Object in the webhook's field names (`uuid` is `id`, `ref_code` is
    `referral_code`, `created_at` Unix seconds instead of ISO-8601), as a `sync_subscriber`
    event: what SyncSubscriberSchema, its dedup key and the Sprig upsert read. IP address and
    user agent stay behind: nothing downstream needs them."""
    row = listed.row
    subscriber = {
        "id": listed.uuid,
        "email": row["email"].strip(),
        "name": of_type(row.get("name"), str),
        "referral_code": of_type(row.get("ref_code"), str),
        "referrer_code": of_type(row.get("referrer_code"), str),
        "referred": of_type(row.get("referred"), bool),
        "referral_status": of_type(row.get("referral_status"), str),
        "origin": of_type(row.get("origin"), str),
        "created_at": int(listed.created_at.timestamp()),  # webhooks carry Unix seconds
    }
    return {
        "type": "sync_subscriber",
        "subscriber": {key: value for key, value in subscriber.items() if value is not None},
    }


# --- what Relay already holds ---------------------------------------------------------------


def already_received(session: Session, listed: list[Listed], lookup_key: str | None) -> set[str]:
    """The uuids of those Relay already knows about: it holds an event naming their id or email,
    received at or after their creation, and the newest such event that states a referral
    status states the one SparkLoop lists now (else a status change was lost: not skipped).

    One query per page on the digests stored beside each event (relay.subjects: indexed, and
    working on sealed payloads), bounded by received_at (indexed). Events in the window that
    have no digests yet (stored by a process older than them) get theirs first."""
    if not listed:
        return set()
    since = min(s.created_at for s in listed) - CLOCK_SKEW
    fill_missing_subjects(session, since, lookup_key)
    names = {
        **{(subjects.ID, subjects.id_digest(s.uuid, lookup_key)): s.uuid for s in listed},
        **{(subjects.EMAIL, subjects.email_digest(s.email, lookup_key)): s.email for s in listed},
    }
    wanted = [
        sa.and_(EventSubject.kind == kind, EventSubject.digest.in_([d for k, d in names if k == kind]))
        for kind in (subjects.ID, subjects.EMAIL)
    ]
    query = (
        sa.select(Event.received_at, EventSubject.referral_status, EventSubject.kind, EventSubject.digest)
        .join(Event, Event.id == EventSubject.event_id)
        .where(Event.received_at >= since, sa.or_(*wanted))
    )
    mentions: dict[str, list[tuple[datetime, str | None]]] = {}
    for received_at, stated, kind, digest in session.execute(query):
        mentions.setdefault(names[(kind, digest)], []).append((received_at, stated))
    return {s.uuid for s in listed if _known(s, mentions.get(s.uuid, []) + mentions.get(s.email, []))}


def fill_missing_subjects(session: Session, since: datetime, lookup_key: str | None) -> None:
    """Store the digests of events received since `since` that have none: written by a web
    process from before event_subjects (a rolling deploy), or sealed when migration 0006 ran.
    Flushed into the page's transaction: a dry run commits nothing."""
    has_subjects = sa.exists().where(EventSubject.event_id == Event.id)
    missing = sa.select(Event.id, Event.payload).where(Event.received_at >= since, ~has_subjects)
    for event_id, payload in session.execute(missing).all():
        session.add_all(EventSubject(event_id=event_id, **row) for row in subjects.subject_rows(payload, lookup_key))
    session.flush()


def _known(listed: Listed, mentions: list[tuple[datetime, str | None]]) -> bool:
    since_creation = [m for m in mentions if m[0] >= listed.created_at - CLOCK_SKEW]
    stated = sorted(((at, status) for at, status in since_creation if status), key=lambda m: m[0])
    if not stated:
        return bool(since_creation)
    current = of_type(listed.row.get("referral_status"), str) or ""
    return stated[-1][1].strip().lower() == current.strip().lower()


# --- reading the API --------------------------------------------------------------------------


def fetch_page(
    client: SparkLoopClient, page: int, per_page: int, on_retry: OnRetry, sleep: Callable[[float], None] = time.sleep
) -> SubscriberPage:
    """One page, under the one policy for SparkLoop calls an operator waits for
    (workers.sparkloop.retry: SparkLoopUnavailable when it gives up). `on_retry` hears of each
    wait SparkLoop's answer caused: (page, reason, seconds)."""
    return call_patiently(
        client,
        lambda c: c.list_subscribers(page, per_page),
        repeatable=True,
        on_wait=lambda reason, wait_s: on_retry(page, reason, wait_s),
        sleep=sleep,
    )


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Tally:
    pages: int = 0
    seen: int = 0
    created: int = 0
    already_received: int = 0
    duplicates: int = 0
    unusable: int = 0
    page_limit_hit: bool = False

    def add(self, other: Tally) -> None:
        for name in ("pages", "seen", "created", "already_received", "duplicates", "unusable"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class WouldCreate:
    """A dry run's event: whom it would be about (by SparkLoop id only)."""

    uuid: str
    created_at: datetime
    referral_status: str


@dataclass(frozen=True)
class PageRead:
    """One page's outcome, for the operator to follow the run."""

    page: int
    total_pages: int | None
    listed: int
    counts: Tally
    would_create: list[WouldCreate] = field(default_factory=list)


def check_store(runtime: Runtime) -> None:
    """Raises the store's error when it is unreachable or not migrated: before any API call."""
    with runtime.session() as session:
        session.execute(sa.select(Event.source).limit(1))


def run_backfill(
    runtime: Runtime,
    since: datetime,
    per_page: int,
    max_pages: int | None,
    dry_run: bool,
    total: Tally,
    on_page: Callable[[PageRead], None],
    on_retry: OnRetry,
) -> None:
    """Read SparkLoop's subscribers newest first down to `since` (or `max_pages`) and create the
    events Relay lacks (or, dry, say which), page by page; `total` counts as it goes (what was
    created stays if it stops half way)."""
    client = api_client(runtime)
    seen: set[str] = set()
    page = 1
    while True:
        result = fetch_page(client, page, per_page, on_retry)
        parsed = [Listed.parse(row) for row in result.subscribers]
        listed = [s for s in parsed if s is not None]
        # Rows created during the walk push older ones onto the next page: skip repeats.
        fresh = [s for s in listed if s.created_at >= since and s.uuid not in seen]
        seen.update(s.uuid for s in fresh)
        would_create: list[WouldCreate] = []
        counts = take_page(runtime, fresh, dry_run, would_create.append)
        counts.pages, counts.unusable = 1, counts.unusable + len(parsed) - len(listed)
        total.add(counts)
        on_page(PageRead(page, result.total_pages, len(result.subscribers), counts, would_create))

        oldest = min((s.created_at for s in listed), default=None)
        if (
            not result.subscribers
            or (oldest is not None and oldest < since)
            or (result.total_pages is not None and page >= result.total_pages)
            or (result.total_pages is None and len(result.subscribers) < per_page)
        ):
            return
        if max_pages is not None and total.pages >= max_pages:
            total.page_limit_hit = True
            return
        page += 1


def take_page(
    runtime: Runtime, fresh: list[Listed], dry_run: bool, would_create: Callable[[WouldCreate], None]
) -> Tally:
    """Create the events of one page (or, dry, tell `would_create` which); return its counts."""
    counts = Tally(seen=len(fresh))
    config = runtime.config
    with runtime.session() as session:
        received = already_received(session, fresh, config.lookup_key)
        counts.already_received = len(received)
        todo = []
        for listed in fresh:
            if listed.uuid in received:
                continue
            payload = sync_subscriber_payload(listed)
            _, data, errors = validate_event(payload)
            if errors is not None or data is None or storable.first_problem(payload):
                counts.unusable += 1
            else:
                todo.append((listed, payload, dedup_key("sync_subscriber", data)))
        if dry_run:
            stored = set(
                session.scalars(sa.select(Event.dedup_key).where(Event.dedup_key.in_([key for *_, key in todo])))
            )
        for listed, payload, key in todo:
            if dry_run:
                if key in stored:
                    counts.duplicates += 1
                    continue
                counts.created += 1
                would_create(
                    WouldCreate(listed.uuid, listed.created_at, payload["subscriber"].get("referral_status", "-"))
                )
                continue
            outcome = ingest(session, payload, json.dumps(payload).encode(), config, source="backfill")
            if outcome.duplicate:
                counts.duplicates += 1
            else:
                counts.created += 1
    # The workers' dispatcher publishes the deliveries, on the catch-up queue (their lane), so
    # they never hold up live webhooks.
    return counts
