"""give each part of a delivery's state its own place: progress (finished steps), step_times,
throttle_slot, lane (live or catch-up) and deferrals

Before: `steps` mixed finished steps with timestamps (`*_ms`) and the throttle reservation
(`throttle.slot`); backfilled deliveries were marked as catch-up work by `replayed_at`; and
`attempts` was decremented for every deferral.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
THROTTLE_SLOT = "throttle.slot"
BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("steps", new_column_name="progress")
        batch_op.add_column(sa.Column("step_times", JSON, nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("throttle_slot", JSON, nullable=True))
        batch_op.add_column(sa.Column("lane", sa.String(length=20), nullable=False, server_default="live"))
        batch_op.add_column(sa.Column("deferrals", sa.Integer(), nullable=False, server_default="0"))

    deliveries = sa.table(
        "deliveries",
        sa.column("id", sa.Integer),
        sa.column("progress", JSON),
        sa.column("step_times", JSON),
        sa.column("throttle_slot", JSON),
        sa.column("lane", sa.String),
        sa.column("event_id", sa.Integer),
        sa.column("created_at", sa.DateTime),
        sa.column("replayed_at", sa.DateTime),
    )
    events = sa.table("events", sa.column("id", sa.Integer), sa.column("source", sa.String))
    conn = op.get_bind()
    last_id = 0
    while True:
        rows = conn.execute(
            sa.select(deliveries.c.id, deliveries.c.progress)
            .where(deliveries.c.id > last_id)
            .order_by(deliveries.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        for delivery_id, old in rows:
            old = dict(old or {})
            slot = old.pop(THROTTLE_SLOT, None)
            times = {k[: -len("_ms")]: v for k, v in old.items() if k.endswith("_ms")}
            progress = {k: v for k, v in old.items() if not k.endswith("_ms")}
            if slot is not None or times:
                conn.execute(
                    sa.update(deliveries)
                    .where(deliveries.c.id == delivery_id)
                    .values(progress=progress, step_times=times, throttle_slot=slot)
                )
        last_id = rows[-1][0]

    # Catch-up work: replayed deliveries, and every delivery of a backfilled event. The latter
    # were marked replayed at their creation although nobody replayed them: that mark goes.
    backfilled = sa.select(events.c.id).where(events.c.source == "backfill")
    conn.execute(sa.update(deliveries).where(deliveries.c.replayed_at.is_not(None)).values(lane="catch_up"))
    conn.execute(sa.update(deliveries).where(deliveries.c.event_id.in_(backfilled)).values(lane="catch_up"))
    marked_at_creation = [
        delivery_id
        for delivery_id, created, replayed in conn.execute(
            sa.select(deliveries.c.id, deliveries.c.created_at, deliveries.c.replayed_at).where(
                deliveries.c.event_id.in_(backfilled), deliveries.c.replayed_at.is_not(None)
            )
        )
        if abs((_naive(replayed) - _naive(created)).total_seconds()) < 5
    ]
    for start in range(0, len(marked_at_creation), BATCH):
        conn.execute(
            sa.update(deliveries)
            .where(deliveries.c.id.in_(marked_at_creation[start : start + BATCH]))
            .values(replayed_at=None)
        )
    # Old `attempts` already excluded deferrals; with deferrals = 0 the retry budget spent
    # (attempts - deferrals) stays what it was.


def _naive(moment):
    # SQLite returns naive UTC, PostgreSQL aware datetimes.
    return moment.replace(tzinfo=None) - (moment.utcoffset() or timedelta(0))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("deferrals")
        batch_op.drop_column("lane")
        batch_op.drop_column("throttle_slot")
        batch_op.drop_column("step_times")
        batch_op.alter_column("progress", new_column_name="steps")
