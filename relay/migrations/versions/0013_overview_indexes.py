"""indexes for the console's overview: each destination's finished deliveries, its backlog, the last webhook

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08

The overview page (operations.overview) answers from indexes alone on a million events:
- deliveries (destination, status, finished_at) of finished ones: a destination's deliveries
  that succeeded or failed in the last hour and day, per minute for the chart, and its newest
  failure; deliveries still waiting are not in it, so the intake's inserts never touch it;
- deliveries (destination, status, created_at) of those pending or in flight: a destination's
  backlog and its oldest, however large the store (a few rows, unless a vendor is down);
- events (received_at) of webhooks: when the intake last took one, even just after a backfill
  stored thousands of newer events.

On PostgreSQL they are built and dropped CONCURRENTLY, outside the migration's transaction, as
0008's, so the intake keeps writing while a release builds them.
"""

from contextlib import nullcontext
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FINISHED = sa.text("finished_at IS NOT NULL")
BACKLOG = sa.text("status IN ('pending', 'in_flight')")
WEBHOOK = sa.text("source = 'webhook'")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with _outside_the_transaction(postgresql):
        now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
        op.create_index(
            "ix_deliveries_destination_finished",
            "deliveries",
            ["destination", "status", "finished_at"],
            postgresql_where=FINISHED,
            sqlite_where=FINISHED,
            **now,
        )
        op.create_index(
            "ix_deliveries_backlog",
            "deliveries",
            ["destination", "status", "created_at"],
            postgresql_where=BACKLOG,
            sqlite_where=BACKLOG,
            **now,
        )
        op.create_index(
            "ix_events_webhook_received",
            "events",
            ["received_at"],
            postgresql_where=WEBHOOK,
            sqlite_where=WEBHOOK,
            **now,
        )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with _outside_the_transaction(postgresql):
        now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
        op.drop_index("ix_events_webhook_received", table_name="events", **now)
        op.drop_index("ix_deliveries_backlog", table_name="deliveries", **now)
        op.drop_index("ix_deliveries_destination_finished", table_name="deliveries", **now)


def _outside_the_transaction(postgresql: bool):
    """PostgreSQL builds an index CONCURRENTLY only outside a transaction (as in 0008)."""
    return op.get_context().autocommit_block() if postgresql else nullcontext()
