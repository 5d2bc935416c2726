"""Accepting an event: validate, de-duplicate, store the event and its planned deliveries (the
web intake, web.webhooks, and backfill, operations.backfill)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from relay.config import Config
from relay.db import Database
from relay.models import Delivery, Event, EventSubject, Lane, utcnow
from relay.planning import Plan, plan_event
from relay.sealing import sealer_for
from relay.subjects import subject_rows
from schemas.events import raw_dedup_key


@dataclass(frozen=True)
class Ingested:
    event_id: int | None
    status: str
    errors: dict | None = None
    duplicate: bool = False


def ingest(session: Session, payload: dict, raw_body: bytes, config: Config, source: str = "webhook") -> Ingested:
    """Store an event (and its deliveries and subjects) in `session`'s transaction, committed."""
    stored = _rows(payload, raw_body, config, source)
    event_id = _store(session, stored)
    if event_id is None:
        return stored.duplicate_of(session.scalar(_stored_id(stored)))
    return stored.ingested(event_id)


def ingest_webhook(db: Database, payload: dict, raw_body: bytes, config: Config) -> Ingested:
    """The web's path: on PostgreSQL one statement in autocommit (one round trip, durable when
    it returns); elsewhere `ingest`."""
    if db.engine.dialect.name != "postgresql":
        with db.session() as session:
            return ingest(session, payload, raw_body, config)
    stored = _rows(payload, raw_body, config, "webhook")
    with db.intake_engine.connect() as connection:
        event_id = connection.exec_driver_sql(
            _ONE_STATEMENT, _one_statement_parameters(stored, connection.dialect)
        ).scalar()
        if event_id is None:
            return stored.duplicate_of(connection.scalar(_stored_id(stored)))
    return stored.ingested(event_id)


@dataclass(frozen=True)
class _Rows:
    plan: Plan
    event: dict
    lane: Lane  # of every delivery: one per planned destination
    subjects: list[dict]

    def ingested(self, event_id: int) -> Ingested:
        return Ingested(event_id=event_id, status=self.plan.status, errors=self.plan.errors)

    def duplicate_of(self, event_id: int | None) -> Ingested:
        # The unique dedup key: SparkLoop retried, or two copies raced; the first one won.
        return Ingested(event_id=event_id, status=self.plan.status, errors=self.plan.errors, duplicate=True)


def _rows(payload: dict, raw_body: bytes, config: Config, source: str) -> _Rows:
    plan = plan_event(payload, config)
    # Events that did not come from a webhook (a backfill) are catch-up work: delivered like
    # replays, with the throttle slots live traffic leaves.
    lane = Lane.LIVE if source == "webhook" else Lane.CATCH_UP
    return _Rows(
        plan,
        dict(
            type=plan.event_type or "(missing)",
            status=plan.status,
            payload=payload,
            errors=plan.errors,
            dedup_key=plan.key or raw_dedup_key(raw_body),
            source=source,
        ),
        lane,
        # Whom it names, as digests: what lookups use instead of looking into the payload.
        subject_rows(payload, config.lookup_key),
    )


def _stored_id(stored: _Rows):
    return sa.select(Event.id).where(Event.dedup_key == stored.event["dedup_key"])


def _store(session: Session, stored: _Rows) -> int | None:
    """The event, its deliveries and its subjects in one transaction, in three statements
    (Core, not the unit of work: a third of the time); None when its dedup key is taken."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    event_id = session.scalar(
        insert(Event).values(**stored.event).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(Event.id)
    )
    if event_id is None:
        session.rollback()
        return None
    deliveries = [{"destination": d, "lane": stored.lane} for d in stored.plan.destinations]
    for model, rows in ((Delivery, deliveries), (EventSubject, stored.subjects)):
        if rows:
            session.execute(sa.insert(model), [{"event_id": event_id, **row} for row in rows])
    session.commit()
    return event_id


# PostgreSQL: the event, its deliveries and its subjects in one INSERT ... RETURNING with
# data-modifying CTEs; no row when the dedup key is taken (the CTEs then insert nothing). Plain
# SQL, one text for every webhook, so that psycopg prepares it once per connection: building
# the same statement with SQLAlchemy's constructs cost more than the database did.
_ONE_STATEMENT = """
WITH new_event AS (
    INSERT INTO events (type, status, dedup_key, payload, errors, source, received_at, updated_at)
    VALUES (%(type)s, %(status)s, %(dedup_key)s, %(payload)s::jsonb, %(errors)s::jsonb, %(source)s, %(now)s, %(now)s)
    ON CONFLICT (dedup_key) DO NOTHING RETURNING id
), new_deliveries AS (
    INSERT INTO deliveries (event_id, destination, lane, status, attempts, deferrals, progress, step_times,
                            next_attempt_at, created_at, updated_at)
    SELECT new_event.id, destination, %(lane)s, 'pending', 0, 0, '{}', '{}', %(now)s, %(now)s, %(now)s
    FROM new_event, unnest(%(destinations)s::text[]) AS destination
), new_subjects AS (
    INSERT INTO event_subjects (event_id, kind, digest, referral_status)
    SELECT new_event.id, subject.kind, subject.digest, subject.referral_status
    FROM new_event, unnest(%(kinds)s::text[], %(digests)s::text[], %(statuses)s::text[])
         AS subject (kind, digest, referral_status)
)
SELECT id FROM new_event
"""


def _one_statement_parameters(stored: _Rows, dialect) -> dict:
    event = stored.event
    sealed = sealer_for(dialect)
    return {
        "type": event["type"],
        "status": event["status"],
        "dedup_key": event["dedup_key"],
        "payload": json.dumps(sealed.seal(event["payload"])),
        "errors": json.dumps(sealed.seal(event["errors"])),
        "source": event["source"],
        "now": utcnow(),
        "lane": stored.lane.value,
        "destinations": list(stored.plan.destinations),
        "kinds": [s["kind"] for s in stored.subjects],
        "digests": [s["digest"] for s in stored.subjects],
        "statuses": [s["referral_status"] for s in stored.subjects],
    }
