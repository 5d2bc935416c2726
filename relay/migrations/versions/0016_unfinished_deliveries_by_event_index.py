"""an index for a delivery's turn: the unfinished deliveries, by event

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-10

A delivery runs only once every earlier delivery of its destination and lane for the same
subscriber has finished (workers.engine._turn): each run looks up the subscriber's earlier events
(event_subjects, by digest) and probes this index for each. It holds only deliveries pending or
in flight, so a subscriber's finished history costs no read of the table. Built CONCURRENTLY on
PostgreSQL, as 0008's are, so the intake keeps writing while a release builds it.
"""

from contextlib import nullcontext
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BACKLOG = sa.text("status IN ('pending', 'in_flight')")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
    with op.get_context().autocommit_block() if postgresql else nullcontext():
        op.create_index(
            "ix_deliveries_unfinished_event",
            "deliveries",
            ["event_id", "destination"],
            postgresql_where=BACKLOG,
            sqlite_where=BACKLOG,
            **now,
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
    with op.get_context().autocommit_block() if postgresql else nullcontext():
        op.drop_index("ix_deliveries_unfinished_event", table_name="deliveries", **now)
