"""The store: received events, their planned deliveries, and the subscriber identity map."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from relay.sealing import SealedJSON

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC everywhere; SQLite has no time zones, so store naive UTC there too."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class EventStatus:
    RECEIVED = "received"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    INVALID = "invalid"
    UNHANDLED = "unhandled"


class DeliveryStatus:
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    # Nothing left to send: newer values already reached the vendor.
    SUPERSEDED = "superseded"
    FAILED = "failed"
    TERMINAL = ("succeeded", "superseded", "failed")


class Lane(StrEnum):
    """Live deliveries go first; catch-up work (`relay events replay`, `relay backfill`) waits
    in the replay queue and takes only the throttle slots live traffic leaves."""

    LIVE = "live"
    CATCH_UP = "catch_up"


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # A status's events in id order, read from the index alone: `relay events list --status`
        # (newest first) and the ids a replay matches (oldest first).
        sa.Index("ix_events_status_id", "status", "id"),
        # Windows of time (--since, --until, backfill's): the counts of `relay events stats` and
        # of a purge read this index alone.
        sa.Index("ix_events_received_status_type", "received_at", "status", "type"),
        # `relay events list --until`: newest first among older events, skipping the newer ones
        # in the index instead of reading each from the table.
        sa.Index("ix_events_id_received", "id", "received_at"),
        # The console's overview: when the intake last took a webhook (a backfill's events, newer
        # by thousands after a run, are not in it).
        sa.Index(
            "ix_events_webhook_received",
            "received_at",
            postgresql_where=sa.text("source = 'webhook'"),
            sqlite_where=sa.text("source = 'webhook'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(100), index=True)
    status: Mapped[str] = mapped_column(sa.String(20))
    # SparkLoop sends no event id; this natural key (unique) is how redeliveries are recognised.
    dedup_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    # Both personal: sealed at rest when RELAY_PAYLOAD_KEYS is set (relay.sealing).
    payload: Mapped[dict] = mapped_column(SealedJSON)
    errors: Mapped[dict | None] = mapped_column(SealedJSON, nullable=True)
    # "webhook", or "backfill" for an event `relay backfill` made from SparkLoop's API.
    source: Mapped[str] = mapped_column(sa.String(20), default="webhook", server_default="webhook")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="event", order_by="Delivery.id", cascade="all, delete-orphan"
    )
    subjects: Mapped[list[EventSubject]] = relationship(cascade="all, delete-orphan", passive_deletes=True)

    @property
    def received_at_ms(self) -> int:
        return int(self.received_at.timestamp() * 1000)


class EventSubject(Base):
    """A subscriber id or email an event names, as a keyed digest (relay.subjects), so lookups
    work on sealed payloads and use an index; with the referral status the event states."""

    __tablename__ = "event_subjects"

    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(10), primary_key=True)  # "id" or "email"
    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True, index=True)
    referral_status: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)


# Deliveries that are out: claimed, published and not yet claimed, or holding a throttle slot.
OUTSTANDING = sa.text(
    "status = 'in_flight' OR (status = 'pending' AND (enqueued_at IS NOT NULL OR throttle_slot IS NOT NULL))"
)

# Deliveries that ended (succeeded, superseded or failed), and those still to run.
FINISHED = sa.text("finished_at IS NOT NULL")
BACKLOG = sa.text("status IN ('pending', 'in_flight')")


class Delivery(Base):
    """One event x destination: its own status, attempts and progress, so destinations never
    re-run each other's work."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.UniqueConstraint("event_id", "destination", name="uq_delivery_event_destination"),
        sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
        # What the dispatcher looks for (workers.dispatch): a few rows among millions.
        sa.Index(
            "ix_deliveries_unpublished",
            "id",
            postgresql_where=sa.text("status = 'pending' AND enqueued_at IS NULL"),
            sqlite_where=sa.text("status = 'pending' AND enqueued_at IS NULL"),
        ),
        # How many deliveries of each destination and lane are out (workers.dispatch).
        sa.Index(
            "ix_deliveries_outstanding", "destination", "lane", postgresql_where=OUTSTANDING, sqlite_where=OUTSTANDING
        ),
        # `relay events stats`: the deliveries that failed in its window, a few among millions.
        sa.Index(
            "ix_deliveries_failed_finished",
            "finished_at",
            postgresql_where=sa.text("status = 'failed'"),
            sqlite_where=sa.text("status = 'failed'"),
        ),
        # The console's overview, per destination: what finished in a window (counts, the chart)
        # and its last failure; deliveries still waiting are not in it (the intake never writes it).
        sa.Index(
            "ix_deliveries_destination_finished",
            "destination",
            "status",
            "finished_at",
            postgresql_where=FINISHED,
            sqlite_where=FINISHED,
        ),
        # The console's overview, per destination: its backlog and the oldest in it, a few rows.
        sa.Index(
            "ix_deliveries_backlog",
            "destination",
            "status",
            "created_at",
            postgresql_where=BACKLOG,
            sqlite_where=BACKLOG,
        ),
        # Whether a delivery's turn has come (workers.engine._turn): the unfinished deliveries of
        # a subscriber's earlier events, probed by event; finished ones are not in it.
        sa.Index(
            "ix_deliveries_unfinished_event",
            "event_id",
            "destination",
            postgresql_where=BACKLOG,
            sqlite_where=BACKLOG,
        ),
        # A replay's progress (operations.replay.replay_progress): the deliveries one replay sent
        # again share its `replayed_at`; only replayed deliveries are in the index.
        sa.Index(
            "ix_deliveries_replayed_at",
            "replayed_at",
            postgresql_where=sa.text("replayed_at IS NOT NULL"),
            sqlite_where=sa.text("replayed_at IS NOT NULL"),
        ),
        # `--error TEXT` (ILIKE '%TEXT%') among the deliveries that have an error: trigrams
        # (PostgreSQL's pg_trgm) instead of reading every delivery. SQLite has no equivalent.
        sa.Index(
            "ix_deliveries_last_error_trgm",
            "last_error",
            postgresql_using="gin",
            postgresql_ops={"last_error": "gin_trgm_ops"},
            postgresql_where=sa.text("last_error IS NOT NULL"),
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(sa.ForeignKey("events.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(sa.String(20))
    status: Mapped[str] = mapped_column(sa.String(20), default=DeliveryStatus.PENDING)
    lane: Mapped[str] = mapped_column(sa.String(20), default=Lane.LIVE, server_default=Lane.LIVE.value)
    # Every run a worker started; `deferrals` of them ended deferred (throttle, breaker, a busy
    # subscriber) and spend none of the retry budget (RELAY_RETRY_MAX_ATTEMPTS).
    attempts: Mapped[int] = mapped_column(default=0)
    deferrals: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # For an unexpected error: where it was raised (`file:line in function`, innermost last).
    last_error_trace: Mapped[list | None] = mapped_column(JSONType, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(nullable=True)
    # Finished steps of a multi-step delivery and what each produced (a vendor id, a request
    # id, or true), so a retry resumes after the last one instead of repeating side effects.
    progress: Mapped[dict] = mapped_column(JSONType, default=dict)
    # When (Unix ms) something later attempts rely on happened: a read that found nothing,
    # the first attempt to post a note.
    step_times: Mapped[dict] = mapped_column(JSONType, default=dict)
    # The shared-throttle slot this deferred delivery reserved ({"account", "at_ms"}).
    throttle_slot: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When an operator last replayed it (`relay events replay`).
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    event: Mapped[Event] = relationship(back_populates="deliveries")


class DeliveryAttempt(Base):
    """One run of a delivery, as it ended (workers.engine writes it with the run's outcome):
    what an operator reads to see how a delivery went, attempt by attempt. Never a payload
    value: the error is the scrubbed one the delivery records, the rate limits are numbers."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(sa.ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    # The claim's number (Delivery.attempts when it ran): a replay counts from 1 again.
    attempt: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # succeeded, superseded, failed, retried or deferred.
    outcome: Mapped[str] = mapped_column(sa.String(20))
    vendor_status: Mapped[int | None] = mapped_column(nullable=True)
    vendor_request_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    duration_ms: Mapped[int]
    # Why it failed, was retried or deferred (the delivery's scrubbed reason).
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # The steps this run finished (their names), for a multi-step delivery.
    steps: Mapped[list | None] = mapped_column(JSONType, nullable=True)
    # The vendor's rate limits as its last answer in this run stated them (workers.vendor_http's
    # RateLimitHeaders: limit, remaining, reset_after (s), daily_limit, daily_remaining).
    rate_limits: Mapped[dict | None] = mapped_column(JSONType, nullable=True)


class DestinationLink(Base):
    """What a destination remembers of a subscriber (its ids at the vendor, the versions of what
    it holds), so that a known subscriber costs no search call: one row per subscriber and
    destination, whose `data` only that destination's deliveries write (workers.identity), so
    that two vendors' deliveries for one subscriber, which run at the same time, never write
    the same row."""

    __tablename__ = "destination_links"
    __table_args__ = (sa.UniqueConstraint("subscriber_key", "destination", name="uq_destination_link"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_key: Mapped[str] = mapped_column(sa.String(255))
    destination: Mapped[str] = mapped_column(sa.String(20))
    # The destination's own keys (Destination.remembers names them), e.g. Spruce's contact_id.
    data: Mapped[dict] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Account(Base):
    """A person who signs in to the console: a viewer sees, an operator also acts
    (operations.accounts). Sessions carry `session_version`; a change of password or role raises
    it, and a removed account has no row, so both end every session signed in before."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Lowercase, trimmed: one account per address whatever its case.
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    role: Mapped[str] = mapped_column(sa.String(20))
    # werkzeug.security's scrypt hash (method, salt and hash in one string), never the password.
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    session_version: Mapped[int] = mapped_column(default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """One operator action, from the CLI or the console (operations.audit): who, when, from
    where, what, on which ids, and how it ended. Ids, digests and account emails only: never a
    subscriber's data or a payload value."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        # `relay audit list --actor` / `--action`, newest first.
        sa.Index("ix_audit_entries_actor_id", "actor", "id"),
        sa.Index("ix_audit_entries_action_id", "action", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # An account's email (console), RELAY_OPERATOR or the OS user (CLI).
    actor: Mapped[str] = mapped_column(sa.String(254))
    interface: Mapped[str] = mapped_column(sa.String(10))  # "cli" or "console"
    address: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)  # the console's client
    action: Mapped[str] = mapped_column(sa.String(40))
    # {"events": [ids], "deliveries": [ids], "account": email, "person": "person-…"}, as the action has them.
    targets: Mapped[dict] = mapped_column(JSONType, default=dict)
    # What else the action was given or did, in counts and flags (force, role, events re-sealed).
    details: Mapped[dict] = mapped_column(JSONType, default=dict)
    outcome: Mapped[str] = mapped_column(sa.String(10))  # "ok", "refused" or "failed"
    reason: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)


class DestinationHold(Base):
    """An operator's hold on a destination (operations.destinations): while a row of it has no
    `resumed_at`, that destination's deliveries wait, pending, and none is run (workers.dispatch
    publishes none, workers.engine claims none); the intake goes on storing them. Resumed holds
    stay, so that the time a delivery spent held does not count towards its age
    (RELAY_RETRY_MAX_AGE). The reason is the operator's own words, shown to every console user."""

    __tablename__ = "destination_holds"
    __table_args__ = (
        # One current hold per destination: a second `relay destinations hold` finds it held.
        sa.Index(
            "uq_destination_holds_current",
            "destination",
            unique=True,
            postgresql_where=sa.text("resumed_at IS NULL"),
            sqlite_where=sa.text("resumed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    destination: Mapped[str] = mapped_column(sa.String(20))
    reason: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    # An account's email (console), RELAY_OPERATOR or the OS user (CLI), as the audit log has them.
    held_by: Mapped[str] = mapped_column(sa.String(254))
    held_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resumed_by: Mapped[str | None] = mapped_column(sa.String(254), nullable=True)
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# The holds in force (workers.dispatch, workers.engine and workers.sweep leave their destinations' deliveries alone).
CURRENT_HOLD = DestinationHold.resumed_at.is_(None)
