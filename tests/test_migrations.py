"""Migrations carry stored deliveries forward, on both stores: 0004 splits the old `steps` into
progress, step times and the throttle slot, and gives catch-up work its own lane; 0006 stores
the subscriber digests of the events already received; 0008 builds the indexes the models
declare (bench/million's), 0010 gives each destination its links in a row of its own,
0011 adds the attempt history (its rows go with their delivery), 0012 the console's accounts
and the audit log; and each of them can be downgraded."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from relay.db import Database
from relay.models import Base
from relay.subjects import email_digest
from testbed.services import store_at

CREATED = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request, tmp_path, migration_database):
    """A store at revision 0003, as a deploy before this change left it."""
    with store_at(request.param, tmp_path, "0003") as db:
        yield db


def insert(conn, table: str, **values) -> int:
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    return conn.execute(sa.text(f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING id"), values).scalar()


def delivery(conn, event_id: int, destination: str, steps: dict, replayed_at=None, attempts=1) -> int:
    return insert(conn, "deliveries", event_id=event_id, destination=destination, status="pending",
                  attempts=attempts, steps=json.dumps(steps), next_attempt_at=CREATED, created_at=CREATED,
                  updated_at=CREATED, replayed_at=replayed_at)


def event(conn, key: str, source: str) -> int:
    return insert(conn, "events", type="reward_unlocked", status="processing", dedup_key=key,
                  payload="{}", received_at=CREATED, updated_at=CREATED, source=source)


def test_0004_gives_each_part_of_a_delivery_its_place(old_store):
    slot = {"account": "spruce:abc", "at_ms": 1764064800000}
    with old_store.engine.begin() as conn:
        webhook, backfilled = event(conn, "k1", "webhook"), event(conn, "k2", "backfill")
        spruce = delivery(conn, webhook, "spruce", {
            "spruce.contact": "c_1", "spruce.contact.search_empty_ms": 1764064000000,
            "spruce.note.first_attempt_ms": 1764064100000, "throttle.slot": slot}, attempts=3)
        replayed = delivery(conn, webhook, "sprig", {"sprig.attributes.subscriber": True},
                            replayed_at=CREATED + timedelta(days=1))
        caught_up = delivery(conn, backfilled, "sprig", {}, replayed_at=CREATED)

    old_store.upgrade()

    with old_store.engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(sa.text(
            "SELECT id, progress, step_times, throttle_slot, lane, replayed_at, attempts, deferrals FROM deliveries"))}
    as_dict = (lambda value: json.loads(value) if isinstance(value, str) else value)
    assert as_dict(rows[spruce].progress) == {"spruce.contact": "c_1"}
    assert as_dict(rows[spruce].step_times) == {"spruce.contact.search_empty": 1764064000000,
                                               "spruce.note.first_attempt": 1764064100000}
    assert as_dict(rows[spruce].throttle_slot) == slot
    assert (rows[spruce].lane, rows[spruce].attempts, rows[spruce].deferrals) == ("live", 3, 0)
    assert as_dict(rows[replayed].progress) == {"sprig.attributes.subscriber": True}
    assert (rows[replayed].lane, rows[replayed].replayed_at is not None) == ("catch_up", True)
    # A backfilled delivery is catch-up work, but nobody replayed it.
    assert (rows[caught_up].lane, rows[caught_up].replayed_at) == ("catch_up", None)
    assert as_dict(rows[caught_up].step_times) == {} and rows[caught_up].throttle_slot is None


def test_0004_can_be_downgraded(old_store):
    old_store.upgrade()
    old_store.downgrade("0003")
    with old_store.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("deliveries")}
    assert "steps" in columns and not {"progress", "step_times", "throttle_slot", "lane", "deferrals"} & columns


def test_0006_stores_the_digests_of_existing_events(old_store):
    old_store.upgrade("0005")
    payloads = {
        "referral": {"type": "new_referral", "subscriber": {"id": "sub_1", "email": " Ann@Example.com"},
                     "referrer": {"id": "sub_2", "email": "bob@example.com"}},
        "sync": {"type": "sync_subscriber", "lead": {"email": "lead@example.com", "referral_status": "verified"}},
        "nobody": {"type": "unknown"},
        "sealed": {"sealed": "gAAAAAB-a-token", "key": "123456789abc"},  # skipped: no key opens it
    }
    with old_store.engine.begin() as conn:
        ids = {name: insert(conn, "events", type="x", status="done", dedup_key=name, payload=json.dumps(payload),
                            received_at=CREATED, updated_at=CREATED, source="webhook")
               for name, payload in payloads.items()}

    old_store.upgrade()

    with old_store.engine.connect() as conn:
        rows = {(row.event_id, row.kind, row.digest, row.referral_status) for row in conn.execute(
            sa.text("SELECT event_id, kind, digest, referral_status FROM event_subjects"))}
    sha = (lambda text: hashlib.sha256(text.encode()).hexdigest())
    assert rows == {
        (ids["referral"], "id", sha("sub_1"), None), (ids["referral"], "email", sha("ann@example.com"), None),
        (ids["referral"], "id", sha("sub_2"), None), (ids["referral"], "email", sha("bob@example.com"), None),
        (ids["sync"], "email", sha("lead@example.com"), "verified"),
    }


def test_0006_can_be_downgraded(old_store):
    old_store.upgrade()
    old_store.downgrade("0005")
    with old_store.engine.connect() as conn:
        assert "event_subjects" not in sa.inspect(conn).get_table_names()
    old_store.upgrade()


def test_0006_opens_sealed_payloads_and_keys_digests_as_its_database_says(old_store):
    key = Fernet.generate_key().decode()
    lookup_key = "a-lookup-key-of-more-than-32-characters"
    old_store.upgrade("0005")
    keyed = Database(old_store.url, (key,), lookup_key=lookup_key)
    sealed = keyed.sealer.seal({"type": "sync_subscriber", "subscriber": {"email": "ann@example.com"}})
    with old_store.engine.begin() as conn:
        event_id = insert(conn, "events", type="x", status="done", dedup_key="k", payload=json.dumps(sealed),
                          received_at=CREATED, updated_at=CREATED, source="webhook")

    keyed.upgrade()
    keyed.dispose()

    with old_store.engine.connect() as conn:
        [row] = conn.execute(sa.text("SELECT event_id, kind, digest FROM event_subjects")).all()
    assert tuple(row) == (event_id, "email", email_digest("ann@example.com", lookup_key))


def stored_indexes(db: Database, table: str) -> set[str]:
    with db.engine.connect() as conn:
        return {index["name"] for index in sa.inspect(conn).get_indexes(table)
                if not index.get("duplicates_constraint")}


def test_0008_gives_the_store_the_indexes_the_models_declare(old_store):
    old_store.upgrade()
    postgresql_only = {"ix_deliveries_last_error_trgm"}  # pg_trgm
    for table in ("events", "deliveries"):
        declared = {index.name for index in Base.metadata.tables[table].indexes}
        if old_store.engine.dialect.name != "postgresql":
            declared -= postgresql_only
        assert stored_indexes(old_store, table) == declared


def test_0008_can_be_downgraded(old_store):
    old_store.upgrade()
    old_store.downgrade("0007")
    assert stored_indexes(old_store, "events") == {"ix_events_received_at", "ix_events_status", "ix_events_type"}
    assert stored_indexes(old_store, "deliveries") == {"ix_deliveries_due", "ix_deliveries_event_id",
                                                       "ix_deliveries_unpublished"}
    old_store.upgrade()


def test_0010_gives_each_destination_its_own_row_of_links_and_can_be_downgraded(old_store):
    old_store.upgrade("0009")
    versions = {"referral_count": [1764064800000, 7]}
    with old_store.engine.begin() as conn:
        for key, contact, conversation, sprig in [
            ("id:sub_1", "c_1", "n_1", versions),  # both vendors
            ("email:abc", "c_2", None, None),  # Spruce only
            ("id:sub_3", None, None, versions),  # Sprig only
            ("id:sub_4", None, None, None),  # nothing left (its ids were dropped)
        ]:
            insert(conn, "subscriber_links", subscriber_key=key, spruce_contact_id=contact,
                   spruce_note_conversation_id=conversation, updated_at=CREATED,
                   sprig_attribute_versions=json.dumps(sprig) if sprig else None)

    old_store.upgrade()

    as_dict = (lambda value: json.loads(value) if isinstance(value, str) else value)
    with old_store.engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        rows = {(row.subscriber_key, row.destination): as_dict(row.data) for row in conn.execute(
            sa.text("SELECT subscriber_key, destination, data FROM destination_links"))}
    assert "subscriber_links" not in tables
    assert rows == {
        ("id:sub_1", "spruce"): {"contact_id": "c_1", "note_conversation_id": "n_1"},
        ("id:sub_1", "sprig"): {"attribute_versions": versions},
        ("email:abc", "spruce"): {"contact_id": "c_2"},
        ("id:sub_3", "sprig"): {"attribute_versions": versions},
    }
    with old_store.engine.begin() as conn:  # one a third destination remembers: no old column holds it
        conn.execute(sa.text("INSERT INTO destination_links (subscriber_key, destination, data, updated_at) "
                             "VALUES ('id:sub_5', 'another', :data, :at)"), {"data": '{"account": "a_5"}', "at": CREATED})

    old_store.downgrade("0009")

    with old_store.engine.connect() as conn:
        assert "destination_links" not in sa.inspect(conn).get_table_names()
        back = {row.subscriber_key: (row.spruce_contact_id, row.spruce_note_conversation_id,
                                     as_dict(row.sprig_attribute_versions)) for row in conn.execute(sa.text(
            "SELECT subscriber_key, spruce_contact_id, spruce_note_conversation_id, sprig_attribute_versions "
            "FROM subscriber_links"))}
    assert back == {"id:sub_1": ("c_1", "n_1", versions), "email:abc": ("c_2", None, None),
                    "id:sub_3": (None, None, versions)}
    old_store.upgrade()


def test_0011_adds_the_attempt_history_whose_rows_go_with_their_delivery_and_can_be_downgraded(old_store):
    old_store.upgrade("0010")
    with old_store.engine.begin() as conn:
        event_id = event(conn, "k1", "webhook")
        kept, deleted = (insert(conn, "deliveries", event_id=event_id, destination=name, status="succeeded",
                                attempts=1, deferrals=0, progress="{}", step_times="{}", next_attempt_at=CREATED,
                                created_at=CREATED, updated_at=CREATED) for name in ("sprig", "spruce"))

    old_store.upgrade("0011")

    assert stored_indexes(old_store, "delivery_attempts") == {"ix_delivery_attempts_delivery_id"}
    with old_store.engine.begin() as conn:
        for delivery_id in (kept, deleted):
            insert(conn, "delivery_attempts", delivery_id=delivery_id, attempt=1, started_at=CREATED,
                   finished_at=CREATED, outcome="succeeded", vendor_status=200, vendor_request_id="r_1",
                   duration_ms=12, error=None, steps='["spruce.note"]', rate_limits='{"remaining": 9}')
        conn.execute(sa.text("DELETE FROM deliveries WHERE id = :id"), {"id": deleted})
    with old_store.engine.connect() as conn:
        left = conn.execute(sa.text("SELECT delivery_id, outcome, duration_ms FROM delivery_attempts")).all()
    assert [tuple(row) for row in left] == [(kept, "succeeded", 12)]  # ON DELETE CASCADE, on both stores

    old_store.downgrade("0010")
    with old_store.engine.connect() as conn:
        assert "delivery_attempts" not in sa.inspect(conn).get_table_names()
    old_store.upgrade()


def test_0012_adds_accounts_and_the_audit_log_as_the_models_declare_and_can_be_downgraded(old_store):
    old_store.upgrade("0011")
    with old_store.engine.connect() as conn:
        assert not {"accounts", "audit_entries"} & set(sa.inspect(conn).get_table_names())

    old_store.upgrade()

    with old_store.engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in ("accounts", "audit_entries"):
            assert {c["name"] for c in inspector.get_columns(table)} == set(Base.metadata.tables[table].c.keys())
        assert [u["column_names"] for u in inspector.get_unique_constraints("accounts")] == [["email"]]
    assert stored_indexes(old_store, "audit_entries") == {index.name for index in
                                                          Base.metadata.tables["audit_entries"].indexes}
    with old_store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (email, role, password_hash, created_at, updated_at) "
                             "VALUES ('a@clinic.example', 'viewer', 'scrypt:x', :at, :at)"), {"at": CREATED})
        version = conn.execute(sa.text("SELECT session_version FROM accounts")).scalar()
        with pytest.raises(sa.exc.IntegrityError):  # one account per email
            with conn.begin_nested():
                conn.execute(sa.text("INSERT INTO accounts (email, role, password_hash, created_at, updated_at) "
                                     "VALUES ('a@clinic.example', 'operator', 'scrypt:y', :at, :at)"), {"at": CREATED})
    assert version == 1

    old_store.downgrade("0011")

    with old_store.engine.connect() as conn:
        assert not {"accounts", "audit_entries"} & set(sa.inspect(conn).get_table_names())
    old_store.upgrade()
