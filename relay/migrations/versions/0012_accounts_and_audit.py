"""console accounts and the audit log

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

accounts: the people who sign in to the console (operations.accounts); audit_entries: every
operator action, from the CLI or the console (operations.audit). Both new, nothing carried over;
a downgrade drops them.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import relay.models

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("session_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=254), nullable=False),
        sa.Column("interface", sa.String(length=10), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("targets", JSON, nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_entries_actor_id", "audit_entries", ["actor", "id"])
    op.create_index("ix_audit_entries_action_id", "audit_entries", ["action", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_entries_action_id", table_name="audit_entries")
    op.drop_index("ix_audit_entries_actor_id", table_name="audit_entries")
    op.drop_table("audit_entries")
    op.drop_table("accounts")
