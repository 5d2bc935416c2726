"""operators' holds on a destination

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-09

destination_holds: `relay destinations hold NAME` (or the console's Hold) adds a row; while it
has no `resumed_at`, that destination's deliveries wait, pending, and none is run; `resume` sets
`resumed_at`. One current hold per destination (a partial unique index). New, nothing carried
over; a downgrade drops it, and with it every hold in force.
"""

import sqlalchemy as sa
from alembic import op

import relay.models

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

CURRENT = sa.text("resumed_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "destination_holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("held_by", sa.String(length=254), nullable=False),
        sa.Column("held_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resumed_by", sa.String(length=254), nullable=True),
        sa.Column("resumed_at", relay.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_destination_holds_current",
        "destination_holds",
        ["destination"],
        unique=True,
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )


def downgrade() -> None:
    op.drop_index("uq_destination_holds_current", table_name="destination_holds")
    op.drop_table("destination_holds")
