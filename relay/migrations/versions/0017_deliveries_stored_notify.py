"""a wake-up for the dispatchers: NOTIFY relay_deliveries_stored when deliveries are stored

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

The workers' dispatchers (workers.dispatch) LISTEN on this channel and publish at once, instead
of finding new deliveries by a poll every 50-100 ms. A statement-level trigger: one
notification per intake statement however many deliveries it stores, sent by PostgreSQL at
commit (none for a rolled-back one), and folded into one when a transaction sends several.
PostgreSQL only: SQLite has no LISTEN, and its dispatcher keeps polling.
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

CHANNEL = "relay_deliveries_stored"  # workers.dispatch.STORED_CHANNEL


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION relay_notify_deliveries_stored() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER deliveries_stored AFTER INSERT ON deliveries "
        "FOR EACH STATEMENT EXECUTE FUNCTION relay_notify_deliveries_stored()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS deliveries_stored ON deliveries")
    op.execute("DROP FUNCTION IF EXISTS relay_notify_deliveries_stored()")
