"""an index for the dispatcher's count of deliveries out per destination and lane

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

The dispatcher (workers.dispatch) keeps at most MAX_OUT_PER_DESTINATION_LANE deliveries of a
destination and lane out (claimed, published, or holding a throttle slot) and counts them every
round: this partial index holds those few rows, so the count does not read a backlog. Built
CONCURRENTLY on PostgreSQL, as 0008's are, so the intake keeps writing while a release builds it.
"""

from contextlib import nullcontext
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OUTSTANDING = sa.text(
    "status = 'in_flight' OR (status = 'pending' AND (enqueued_at IS NOT NULL OR throttle_slot IS NOT NULL))"
)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
    with op.get_context().autocommit_block() if postgresql else nullcontext():
        op.create_index(
            "ix_deliveries_outstanding",
            "deliveries",
            ["destination", "lane"],
            postgresql_where=OUTSTANDING,
            sqlite_where=OUTSTANDING,
            **now,
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
    with op.get_context().autocommit_block() if postgresql else nullcontext():
        op.drop_index(
            "ix_deliveries_outstanding",
            table_name="deliveries",
            **now,
        )
