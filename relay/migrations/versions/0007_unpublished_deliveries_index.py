"""an index for the dispatcher: pending deliveries nobody has published yet

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UNPUBLISHED = sa.text("status = 'pending' AND enqueued_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_unpublished", "deliveries", ["id"], postgresql_where=UNPUBLISHED, sqlite_where=UNPUBLISHED
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_unpublished", table_name="deliveries")
