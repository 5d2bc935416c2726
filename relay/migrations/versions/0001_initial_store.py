"""initial store

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import relay.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "errors", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("received_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_received_at"), ["received_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_type"), ["type"], unique=False)

    op.create_table(
        "subscriber_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_key", sa.String(length=255), nullable=False),
        sa.Column("spruce_contact_id", sa.String(length=100), nullable=True),
        sa.Column("spruce_note_conversation_id", sa.String(length=100), nullable=True),
        sa.Column("updated_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_key"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column(
            "steps", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("next_attempt_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", relay.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", relay.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", relay.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "destination", name="uq_delivery_event_destination"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_deliveries_event_id"), ["event_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_due")
        batch_op.drop_index(batch_op.f("ix_deliveries_event_id"))

    op.drop_table("deliveries")
    op.drop_table("subscriber_links")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_type"))
        batch_op.drop_index(batch_op.f("ix_events_status"))
        batch_op.drop_index(batch_op.f("ix_events_received_at"))

    op.drop_table("events")
