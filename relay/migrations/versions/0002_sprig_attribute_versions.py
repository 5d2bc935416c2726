"""remember which event each Sprig attribute value came from

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriber_links", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "sprig_attribute_versions",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriber_links", schema=None) as batch_op:
        batch_op.drop_column("sprig_attribute_versions")
