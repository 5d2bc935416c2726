"""who each event names, as keyed digests beside it (event_subjects), filled for existing events

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Existing events get their subject rows from their payloads, in batches. At this revision no
payload should be sealed yet; one that is is opened with the keys of the Database running the
migration, and skipped if it has none (`relay backfill` fills what is missing in its window).
The digests use RELAY_LOOKUP_KEY as the Database running the migration knows it (relay.db).
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from relay import sealing
from relay.subjects import subject_rows

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 1000
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
events = sa.table("events", sa.column("id", sa.Integer), sa.column("payload", JSON))


def upgrade() -> None:
    op.create_table(
        "event_subjects",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("referral_status", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("event_id", "kind", "digest"),
    )
    op.create_index("ix_event_subjects_digest", "event_subjects", ["digest"])
    fill(op.get_bind(), context.config.attributes.get("lookup_key"))


def fill(conn, lookup_key) -> None:
    subjects = sa.table(
        "event_subjects", *(sa.column(name) for name in ("event_id", "kind", "digest", "referral_status"))
    )
    sealer = sealing.sealer_for(conn.dialect)
    last = 0
    while True:
        batch = conn.execute(
            sa.select(events.c.id, events.c.payload).where(events.c.id > last).order_by(events.c.id).limit(BATCH)
        ).all()
        if not batch:
            return
        rows: list[dict[str, object]] = []
        for event_id, payload in batch:
            try:
                payload = sealer.open(payload)
            except sealing.SealedDataError:
                continue
            rows.extend({"event_id": event_id, **row} for row in subject_rows(payload, lookup_key))
        if rows:
            conn.execute(subjects.insert(), rows)
        last = batch[-1].id


def downgrade() -> None:
    op.drop_index("ix_event_subjects_digest", table_name="event_subjects")
    op.drop_table("event_subjects")
