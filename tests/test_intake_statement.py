"""The intake writes what the models declare, on both stores (relay.ingest builds its statement
from the models' tables): a non-null column added to a model, with a default in the model only,
is written by the web's path and by backfill's, on PostgreSQL and on SQLite alike."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from testbed.services import PG_URL, drop_database, migrated_from_scratch, require_service

ROOT = Path(__file__).resolve().parents[1]

# Run in a process of its own: the column is added to the models' tables before relay.ingest
# builds its statement (once per process), and no other test sees it.
ADD_A_COLUMN_AND_INGEST = """
import json, sys
import sqlalchemy as sa
from relay.config import load_config
from relay.db import Database
from relay.models import Base

postgres_url, sqlite_url, instance = sys.argv[1:4]
TABLES = ("events", "deliveries", "event_subjects")
for name in TABLES:
    Base.metadata.tables[name].append_column(
        sa.Column("added", sa.String(40), nullable=False, default=lambda: "from the model"))

from relay.ingest import ingest, ingest_webhook
from sandbox import FIXTURES

written = {}
for url in (postgres_url, sqlite_url):
    db = Database(url)
    if url.startswith("postgresql"):  # migrated: the column as a migration would add it, no server default
        with db.engine.begin() as conn:
            for name in TABLES:
                conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN added varchar(40) NOT NULL"))
    else:
        Base.metadata.create_all(db.engine)
    config = load_config({"SPARKLOOP_WEBHOOK_TOKEN": "t", "SPRIG_API_KEY": "k", "SPRUCE_API_TOKEN": "k",
                          "DATABASE_URL": url}, instance_path=instance)
    webhook = json.loads((FIXTURES / "new_referral.json").read_text())
    backfilled = {**webhook, "subscriber": {**webhook["subscriber"], "id": "sub_backfilled"}}
    assert not ingest_webhook(db, webhook, json.dumps(webhook).encode(), config).duplicate
    with db.session() as session:
        assert not ingest(session, backfilled, json.dumps(backfilled).encode(), config, source="backfill").duplicate
    with db.engine.connect() as conn:
        written[db.engine.dialect.name] = {
            name: conn.execute(sa.text(f"SELECT added FROM {name}")).scalars().all() for name in TABLES}
    db.dispose()
print(json.dumps(written))
"""


def test_a_column_added_to_the_models_is_written_by_both_stores(tmp_path):
    require_service("PostgreSQL", PG_URL)
    postgres_url = migrated_from_scratch(f"{PG_URL}_added_column")
    try:
        finished = subprocess.run(
            [sys.executable, "-c", ADD_A_COLUMN_AND_INGEST, postgres_url, f"sqlite:///{tmp_path / 'relay.sqlite3'}",
             str(tmp_path / "instance")],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        drop_database(postgres_url)
    assert finished.returncode == 0, finished.stderr[-3000:]
    written = json.loads(finished.stdout)
    assert written.keys() == {"postgresql", "sqlite"}
    for store, tables in written.items():
        # Two events (the webhook's and the backfilled one), two deliveries each, their subjects.
        assert len(tables["events"]) == 2 and len(tables["deliveries"]) == 4 and tables["event_subjects"], store
        for table, values in tables.items():
            assert set(values) == {"from the model"}, (store, table)
