"""each destination's links of a subscriber in a row of its own

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

subscriber_links held one row per subscriber with a column per vendor id (Spruce's contact and
note conversation, Sprig's attribute versions): a new destination needed a migration and a
column in the store's models. destination_links holds one row per subscriber and destination,
whose `data` is the destination's own (workers.identity), so Sprig's and Spruce's deliveries,
which run at the same time, never write the same row. The old rows are carried over under the
keys the vendors' packages now name them by; a downgrade carries Sprig's and Spruce's back (a
destination the old columns have no place for loses its links: the next delivery finds or
creates them again).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import relay.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
# Old column -> (destination, key in its data).
CARRIED = {
    "spruce_contact_id": ("spruce", "contact_id"),
    "spruce_note_conversation_id": ("spruce", "note_conversation_id"),
    "sprig_attribute_versions": ("sprig", "attribute_versions"),
}

subscriber_links = sa.table(
    "subscriber_links",
    sa.column("subscriber_key", sa.String),
    sa.column("spruce_contact_id", sa.String),
    sa.column("spruce_note_conversation_id", sa.String),
    sa.column("sprig_attribute_versions", JSON),
    sa.column("updated_at", relay.models.UTCDateTime(timezone=True)),
)
destination_links = sa.table(
    "destination_links",
    sa.column("subscriber_key", sa.String),
    sa.column("destination", sa.String),
    sa.column("data", JSON),
    sa.column("updated_at", relay.models.UTCDateTime(timezone=True)),
)


def upgrade() -> None:
    op.create_table(
        "destination_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_key", sa.String(length=255), nullable=False),
        sa.Column("destination", sa.String(length=20), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("updated_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_key", "destination", name="uq_destination_link"),
    )
    conn = op.get_bind()
    rows = []
    for link in conn.execute(sa.select(subscriber_links)).mappings():
        data: dict[str, dict] = {}
        for column, (destination, key) in CARRIED.items():
            if link[column]:
                data.setdefault(destination, {})[key] = link[column]
        rows += [
            {
                "subscriber_key": link["subscriber_key"],
                "destination": name,
                "data": kept,
                "updated_at": link["updated_at"],
            }
            for name, kept in data.items()
        ]
    if rows:
        conn.execute(sa.insert(destination_links), rows)
    op.drop_table("subscriber_links")


def downgrade() -> None:
    op.create_table(
        "subscriber_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_key", sa.String(length=255), nullable=False),
        sa.Column("spruce_contact_id", sa.String(length=100), nullable=True),
        sa.Column("spruce_note_conversation_id", sa.String(length=100), nullable=True),
        sa.Column("updated_at", relay.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sprig_attribute_versions", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_key"),
    )
    conn = op.get_bind()
    links: dict[str, dict] = {}
    for link in conn.execute(sa.select(destination_links).order_by(destination_links.c.subscriber_key)).mappings():
        row = links.setdefault(
            link["subscriber_key"], {"subscriber_key": link["subscriber_key"]} | dict.fromkeys(CARRIED)
        )
        row["updated_at"] = max(filter(None, (row.get("updated_at"), link["updated_at"])))
        for column, (destination, key) in CARRIED.items():
            if destination == link["destination"] and link["data"].get(key):
                row[column] = link["data"][key]
    rows = [row for row in links.values() if any(row[column] for column in CARRIED)]
    if rows:
        conn.execute(sa.insert(subscriber_links), rows)
    op.drop_table("destination_links")
