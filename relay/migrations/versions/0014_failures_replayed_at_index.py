"""an index for a replay's progress: the deliveries one replay sent again

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08

Every delivery one replay sends again gets the same `replayed_at`, which its audit entry records
(operations.replay); the console's progress page of a replay counts those deliveries by status
every two seconds. This partial index holds only replayed deliveries, so the count reads that
replay's rows instead of every delivery. Built CONCURRENTLY on PostgreSQL, as 0008's are, so the
intake keeps writing while a release builds it.
"""

from contextlib import nullcontext
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

REPLAYED = sa.text("replayed_at IS NOT NULL")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
    with op.get_context().autocommit_block() if postgresql else nullcontext():
        op.create_index(
            "ix_deliveries_replayed_at",
            "deliveries",
            ["replayed_at"],
            postgresql_where=REPLAYED,
            sqlite_where=REPLAYED,
            **now,
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
    with op.get_context().autocommit_block() if postgresql else nullcontext():
        op.drop_index("ix_deliveries_replayed_at", table_name="deliveries", **now)
