"""indexes for a million events: operator commands and the stats read indexes, not the tables

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Measured with bench/million (BENCHMARKS.md, "A million events: Relay's store queries"): without
them `relay events list --until`, `--error`, replay's matching ids, `relay events stats` and a
purge's count read most of a million events.
- events (status, id) replaces (status), and (received_at, status, type) replaces (received_at):
  each serves what the one it replaces served, and those queries read the index alone;
- events (id, received_at): `relay events list --until` walks newest first;
- deliveries (finished_at) of failed ones: `relay events stats`;
- PostgreSQL only: a trigram index (the pg_trgm extension, created here if missing) on the
  deliveries' last errors, for `--error TEXT`.

On PostgreSQL the indexes are built and dropped CONCURRENTLY, outside the migration's
transaction, so the intake keeps writing events while a release builds them (13 to 16 s for
bench/million's million events on the 2-core development machine). Downgrading drops the
indexes and leaves the extension, which other objects may use.
"""

from contextlib import nullcontext
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FAILED = sa.text("status = 'failed'")
HAS_ERROR = sa.text("last_error IS NOT NULL")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    with _outside_the_transaction(postgresql):
        now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
        op.create_index("ix_events_status_id", "events", ["status", "id"], **now)
        op.create_index("ix_events_received_status_type", "events", ["received_at", "status", "type"], **now)
        op.create_index("ix_events_id_received", "events", ["id", "received_at"], **now)
        op.create_index(
            "ix_deliveries_failed_finished",
            "deliveries",
            ["finished_at"],
            postgresql_where=FAILED,
            sqlite_where=FAILED,
            **now,
        )
        if postgresql:
            op.create_index(
                "ix_deliveries_last_error_trgm",
                "deliveries",
                ["last_error"],
                postgresql_using="gin",
                postgresql_ops={"last_error": "gin_trgm_ops"},
                postgresql_where=HAS_ERROR,
                **now,
            )
        op.drop_index("ix_events_status", table_name="events", **now)
        op.drop_index("ix_events_received_at", table_name="events", **now)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with _outside_the_transaction(postgresql):
        now: dict[str, Any] = {"postgresql_concurrently": True} if postgresql else {}
        op.create_index("ix_events_received_at", "events", ["received_at"], **now)
        op.create_index("ix_events_status", "events", ["status"], **now)
        if postgresql:
            op.drop_index("ix_deliveries_last_error_trgm", table_name="deliveries", **now)
        op.drop_index("ix_deliveries_failed_finished", table_name="deliveries", **now)
        op.drop_index("ix_events_id_received", table_name="events", **now)
        op.drop_index("ix_events_received_status_type", table_name="events", **now)
        op.drop_index("ix_events_status_id", table_name="events", **now)


def _outside_the_transaction(postgresql: bool):
    """PostgreSQL builds an index CONCURRENTLY only outside a transaction: Alembic commits what
    ran before and runs the block in autocommit. SQLite builds in the transaction."""
    return op.get_context().autocommit_block() if postgresql else nullcontext()
