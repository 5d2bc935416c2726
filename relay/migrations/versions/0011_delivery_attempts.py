"""each run of a delivery in a row of its own: the attempt history

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

A delivery kept only its last error and status; the console and `relay events show` show every
attempt (when, how it ended, the vendor's status, request id and rate limits, the scrubbed
error). The engine writes one row in the transaction that records a run's end. Its rows go with
their delivery (ON DELETE CASCADE: a purge, an erasure). Deliveries run before this revision
have no rows: their history was never kept.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import relay.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("vendor_status", sa.Integer(), nullable=True),
        sa.Column("vendor_request_id", sa.String(length=255), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("steps", JSON, nullable=True),
        sa.Column("rate_limits", JSON, nullable=True),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_delivery_attempts_delivery_id", table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
