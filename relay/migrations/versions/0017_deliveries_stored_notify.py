"""a wake-up for the dispatchers: NOTIFY relay_deliveries_stored when deliveries are stored

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

The workers' dispatchers (workers.dispatch) LISTEN on this channel and publish at once, instead
of finding new deliveries by a poll every 50-100 ms. A statement-level trigger: one
notification per intake statement however many deliveries it stores, sent by PostgreSQL at
commit (none for a rolled-back one), and folded into one when a transaction sends several.
PostgreSQL only: SQLite has no LISTEN, and its dispatcher keeps polling.

Only one transaction at a time notifies (the one holding NOTIFY_LOCK, a transaction-level
advisory lock it tries for and never waits for). PostgreSQL commits notifying transactions one
after the other, each behind the previous one's WAL flush: with every intake statement notifying,
pgbench's inserts with 16 clients fell from about 6,700 to 700 a second on the development
machine (4 clients: about 2,000 to 400-700); with the lock, about 6,300. A statement that finds
the lock taken commits together with one that notifies; a dispatcher that published on that
wake-up looks again DISPATCH_EVERY_S later, which covers one that committed just after.
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

CHANNEL = "relay_deliveries_stored"  # workers.dispatch.STORED_CHANNEL
NOTIFY_LOCK = "1919251566, 1"  # pg_try_advisory_xact_lock(int, int): Relay takes no other


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION relay_notify_deliveries_stored() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF pg_try_advisory_xact_lock({NOTIFY_LOCK}) THEN
                PERFORM pg_notify('{CHANNEL}', '');
            END IF;
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
