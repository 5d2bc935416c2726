"""Personal data at rest, on both stores: payloads and errors sealed with RELAY_PAYLOAD_KEYS
(relay.sealing), `relay keys` (new, rotate, status), and the keyed digests stored beside each
event (relay.subjects) that backfill and the identity map look subscribers up by."""
from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

import operations.keys as keys_module
from relay.config import ConfigError, load_config
from relay.models import Event, utcnow
from relay.sealing import SealedDataError, key_id
from relay.subjects import email_digest
from relay.runtime import Runtime
from schemas.sparkloop import Subscriber
from testbed.apps import events, post_event, run_pending, sandbox_state
from testbed.examples import load_fixture
from testbed.backfill import backfill, backfilled, seed
from web.cli import main
from workers import identity

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
LOOKUP_KEY = "a-lookup-key-of-more-than-32-characters-for-the-tests"
# What the fixtures say about people: none of it may be stored in clear once keys are set.
PERSONAL = ("john.doe@email.com", "john.smith@email.com", "John", "Doe", "Smith", "sub_hjdgc74u",
            "Springfield", "Example Street")


def invoke(app, *args):
    result = app.test_cli_runner().invoke(main, list(args))
    for secret in (OLD, NEW, LOOKUP_KEY):
        assert secret not in result.output, "a key in the output"
    return result


def raw_rows(app, table: str = "events") -> list[dict]:
    """What the store holds, read with plain SQL (no model type in between)."""
    with Runtime.of(app).db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.text(f"SELECT * FROM {table}"))]


def stored(value):
    return json.loads(value) if isinstance(value, str) else value


def stored_key_ids(app) -> list[str | None]:
    return [stored(row["payload"]).get("key") if "sealed" in stored(row["payload"]) else None
            for row in sorted(raw_rows(app), key=lambda row: row["id"])]


def post_people(app, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        assert post_event(app.test_client(), {"type": "sync_subscriber", "subscriber": {
            "id": f"sub_{n}", "email": f"person{n}@example.com", "name": f"Person Number{n}"}}).status_code == 200


# --- sealing -------------------------------------------------------------------------------------


def test_without_keys_payloads_and_errors_are_stored_as_plain_json(app):
    payload = load_fixture("new_referral")
    post_event(app.test_client(), payload)
    post_event(app.test_client(), {"type": "new_referral", "campaign_id": "c1"})

    valid, invalid = sorted(raw_rows(app), key=lambda row: row["id"])
    assert stored(valid["payload"]) == payload and stored(valid["errors"]) is None
    assert stored(invalid["errors"]) == events(app)[1].errors and "subscriber" in events(app)[1].errors


def test_with_keys_a_webhook_is_stored_sealed_delivered_and_revealed(relay_app, sandbox):
    app = relay_app(RELAY_PAYLOAD_KEYS=NEW, RELAY_LOOKUP_KEY=LOOKUP_KEY)
    payload = load_fixture("reward_redeemed")
    assert post_event(app.test_client(), payload).status_code == 200

    [row] = raw_rows(app)
    text = json.dumps([row["payload"], row["errors"], row["dedup_key"]], default=str)
    text += json.dumps(raw_rows(app, "event_subjects"), default=str)
    for secret in PERSONAL:
        assert secret not in text
    assert stored(row["payload"]).keys() == {"sealed", "key"} and stored(row["payload"])["key"] == key_id(NEW)

    run_pending(app)  # the worker's path: it reads the payload through the model
    assert events(app)[0].status == "done" and events(app)[0].payload == payload
    assert "john.doe@email.com" in sandbox_state(sandbox)["sprig"]["users"]
    assert [c["emailAddresses"][0]["value"] for c in sandbox_state(sandbox)["spruce"]["contacts"]] == [
        "john.doe@email.com"]

    shown = invoke(app, "events", "show", str(row["id"]), "--json", "--reveal")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["payload"] == payload
    assert "john.doe@email.com" not in invoke(app, "events", "show", str(row["id"])).output


def test_with_keys_validation_errors_are_sealed_too_also_by_bulk_updates(relay_app):
    app = relay_app(RELAY_PAYLOAD_KEYS=NEW)
    response = post_event(app.test_client(), {"type": "new_referral", "subscriber": {"email": "x@example.com"}})
    assert response.status_code == 400
    [row] = raw_rows(app)
    assert stored(row["errors"]).keys() == {"sealed", "key"} and "x@example.com" not in json.dumps(stored(row["payload"]))
    assert events(app)[0].errors == response.get_json()["fields"]

    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Event).values(errors={"subscriber": {"email": ["bulk@example.com"]}}))
        session.commit()
    [row] = raw_rows(app)
    assert "bulk@example.com" not in json.dumps(stored(row["errors"]))
    assert events(app)[0].errors == {"subscriber": {"email": ["bulk@example.com"]}}


def test_plain_rows_from_before_keys_still_read_and_a_lookalike_payload_stays_what_it_was(relay_app):
    plain = relay_app()
    lookalike = {"sealed": "not-a-token", "key": "123456789abc"}
    post_event(plain.test_client(), load_fixture("new_referral"))
    post_event(plain.test_client(), lookalike)

    keyed = relay_app(RELAY_PAYLOAD_KEYS=NEW)
    assert [e.payload for e in events(keyed)] == [load_fixture("new_referral"), lookalike]
    assert [e.payload for e in events(plain)] == [load_fixture("new_referral"), lookalike]


def test_a_row_whose_key_was_removed_is_a_clear_error_naming_the_variable(relay_app):
    post_event(relay_app(RELAY_PAYLOAD_KEYS=OLD).test_client(), load_fixture("new_referral"))

    for keys in (NEW, ""):
        with pytest.raises(SealedDataError) as raised:
            events(relay_app(RELAY_PAYLOAD_KEYS=keys))
        message = str(raised.value)
        assert "RELAY_PAYLOAD_KEYS" in message and key_id(OLD) in message
        for secret in (*PERSONAL, OLD, NEW, stored(raw_rows(relay_app())[0]["payload"])["sealed"]):
            assert secret not in message

    rotated = invoke(relay_app(RELAY_PAYLOAD_KEYS=NEW), "keys", "rotate")
    assert rotated.exit_code == 1 and "RELAY_PAYLOAD_KEYS" in rotated.output and "event 1" in rotated.output
    status = invoke(relay_app(RELAY_PAYLOAD_KEYS=NEW), "keys", "status")
    assert "under a key RELAY_PAYLOAD_KEYS does not hold: 1" in status.output


# --- relay keys ---------------------------------------------------------------------------------


def test_keys_new_prints_a_fresh_fernet_key(bare_app):
    app = bare_app()
    first, second = (app.test_cli_runner().invoke(main, ["keys", "new"]).output.strip() for _ in range(2))
    assert first != second
    Fernet(first)  # a valid key
    assert load_config({"RELAY_PAYLOAD_KEYS": first, "RELAY_LOOKUP_KEY": first}, instance_path="/tmp").lookup_key == first


def test_rotate_without_keys_is_exit_2_naming_the_variable(app):
    result = invoke(app, "keys", "rotate")
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: RELAY_PAYLOAD_KEYS is not set")


def test_rotate_reseals_old_and_plain_rows_under_the_first_key(relay_app):
    post_people(relay_app(), 2)                            # plain, from before encryption
    post_people(relay_app(RELAY_PAYLOAD_KEYS=OLD), 3, 2)   # sealed under the old key
    rotating = relay_app(RELAY_PAYLOAD_KEYS=f"{NEW},{OLD}")
    post_people(rotating, 1, 5)                            # already under the new one
    assert stored_key_ids(rotating) == [None, None, key_id(OLD), key_id(OLD), key_id(OLD), key_id(NEW)]
    before = [e.payload for e in events(rotating)]

    status = invoke(rotating, "keys", "status")
    assert f"key 1 (id {key_id(NEW)}, encrypts): 1" in status.output
    assert f"key 2 (id {key_id(OLD)}): 3" in status.output and "not encrypted: 2" in status.output

    result = invoke(rotating, "keys", "rotate", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "done: 5 events sealed under the first key" in result.output
    assert stored_key_ids(rotating) == [key_id(NEW)] * 6
    assert [e.payload for e in events(relay_app(RELAY_PAYLOAD_KEYS=NEW))] == before  # the old key can go
    assert "nothing to do" in invoke(rotating, "keys", "rotate").output


def test_an_interrupted_rotation_continues_where_it_stopped(relay_app, monkeypatch):
    post_people(relay_app(RELAY_PAYLOAD_KEYS=OLD), 5)
    app = relay_app(RELAY_PAYLOAD_KEYS=f"{NEW},{OLD}")
    db = Runtime.of(app).db

    batches = keys_module.rotate(db, batch_size=2)
    assert next(batches) == 2  # the first batch is committed; then the process stops
    batches.close()
    assert stored_key_ids(app) == [key_id(NEW)] * 2 + [key_id(OLD)] * 3

    original = keys_module.rotate

    def interrupted_after_one_batch(*args, **kwargs):
        batches = original(*args, **kwargs)
        yield next(batches)
        raise KeyboardInterrupt

    monkeypatch.setattr(keys_module, "rotate", interrupted_after_one_batch)
    stopped = invoke(app, "keys", "rotate", "--batch-size", "2")
    assert stopped.exit_code == 130 and "interrupted after 2 of 3 events" in stopped.output
    monkeypatch.setattr(keys_module, "rotate", original)

    again = invoke(app, "keys", "rotate", "--batch-size", "2")
    assert again.exit_code == 0 and "done: 1 events" in again.output
    assert stored_key_ids(app) == [key_id(NEW)] * 5


# --- keyed digests --------------------------------------------------------------------------------


def test_digests_are_keyed_with_the_lookup_key(relay_app):
    plain, keyed = relay_app(), relay_app(RELAY_LOOKUP_KEY=LOOKUP_KEY)
    post_people(plain, 1)
    post_people(keyed, 1, 1)
    unkeyed_row, keyed_row = (
        next(r["digest"] for r in raw_rows(plain, "event_subjects") if r["event_id"] == n and r["kind"] == "email")
        for n in (1, 2))
    assert unkeyed_row == hashlib.sha256(b"person0@example.com").hexdigest()
    assert keyed_row == email_digest(" Person1@Example.com ", LOOKUP_KEY) != email_digest("person1@example.com", None)


def test_relay_db_upgrade_digests_existing_events_with_the_lookup_key(relay_app):
    app = relay_app(RELAY_PAYLOAD_KEYS=NEW, RELAY_LOOKUP_KEY=LOOKUP_KEY)
    post_people(app, 1)
    Runtime.of(app).db.downgrade("0005")  # as before this change: no digests stored

    assert invoke(app, "db", "upgrade").exit_code == 0

    emails = [r["digest"] for r in raw_rows(app, "event_subjects") if r["kind"] == "email"]
    assert emails == [email_digest("person0@example.com", LOOKUP_KEY)]


def test_a_short_lookup_key_is_refused_naming_the_variable():
    with pytest.raises(ConfigError, match="RELAY_LOOKUP_KEY"):
        load_config({"RELAY_LOOKUP_KEY": "short"}, instance_path="/tmp")


def test_backfill_recognises_subscribers_of_sealed_events(relay_app, sandbox):
    app = relay_app(RELAY_PAYLOAD_KEYS=NEW, RELAY_LOOKUP_KEY=LOOKUP_KEY)
    post_event(app.test_client(), load_fixture("new_referral"))  # sub_hjdgc74u and sub_93ehus8h
    # Stored by a process from before event_subjects: its digests are made when needed.
    post_event(app.test_client(), {"type": "sync_subscriber", "subscriber": {"email": "Older@Example.com"}})
    with Runtime.of(app).db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM event_subjects WHERE event_id = 2"))
    hour_ago = (utcnow() - timedelta(hours=1)).isoformat()
    [fresh] = sandbox.add_sparkloop_subscribers([
        {"uuid": "sub_hjdgc74u", "email": "john.doe@email.com", "created_at": hour_ago},
        {"uuid": "sub_unmatched", "email": "John.Smith@Email.com", "created_at": hour_ago},
        {"uuid": "sub_older", "email": "older@example.com", "created_at": hour_ago},
        {"uuid": "sub_new", "email": "new@example.com", "created_at": hour_ago},
    ])[3:]

    result = backfill(app, "--since", "1d")

    assert result.exit_code == 0, result.output
    assert [e.payload["subscriber"]["id"] for e in backfilled(app)] == [fresh["uuid"]]
    assert "4 subscribers seen, 1 created, 3 skipped as already received" in result.output
    assert "sealed" in stored(raw_rows(app)[-1]["payload"])


def test_backfill_states_the_newest_status_from_the_digests(relay_app, sandbox):
    app = relay_app(RELAY_PAYLOAD_KEYS=NEW)
    [subscriber] = seed(sandbox, 3, referral_status="verified")
    post_event(app.test_client(), {"type": "sync_subscriber", "subscriber": {
        "id": subscriber["uuid"], "email": "person0@example.com", "referral_status": "pending"}})

    assert backfill(app, "--since", "1d").exit_code == 0
    assert [e.payload["subscriber"]["referral_status"] for e in backfilled(app)] == ["verified"]
    assert backfill(app, "--since", "1d").exit_code == 0
    assert len(backfilled(app)) == 1


def test_rotate_digests_recomputes_them_under_a_new_lookup_key(relay_app):
    post_people(relay_app(), 3)
    app = relay_app(RELAY_LOOKUP_KEY=LOOKUP_KEY)

    result = invoke(app, "keys", "rotate", "--digests", "--batch-size", "2")

    assert result.exit_code == 0, result.output
    emails = sorted(r["digest"] for r in raw_rows(app, "event_subjects") if r["kind"] == "email")
    assert emails == sorted(email_digest(f"person{n}@example.com", LOOKUP_KEY) for n in range(3))
    assert stored_key_ids(app) == [None] * 3  # no payload keys: payloads stay plain


def test_purging_an_event_removes_its_digests(app):
    post_event(app.test_client(), load_fixture("new_referral"))
    with Runtime.of(app).db.session() as session:
        session.execute(sa.delete(Event))
        session.commit()
    assert raw_rows(app, "event_subjects") == []


def test_the_identity_map_keys_email_only_subscribers_by_the_keyed_digest(relay_app):
    plain, keyed = relay_app(), relay_app(RELAY_LOOKUP_KEY=LOOKUP_KEY)
    subscriber = Subscriber(email="lead@example.com")
    plain_runtime, keyed_runtime = Runtime.of(plain), Runtime.of(keyed)
    assert identity_key(plain, subscriber) == "email:" + hashlib.sha256(b"lead@example.com").hexdigest()
    identity.remember(plain_runtime, "spruce", subscriber, contact_id="c_1")  # made before the lookup key was set
    assert identity_key(keyed, subscriber) == "email:" + email_digest("lead@example.com", LOOKUP_KEY)
    assert identity.recall(keyed_runtime, "spruce", subscriber) == {"contact_id": "c_1"}
    identity.remember(keyed_runtime, "spruce", subscriber, note_conversation_id="n_1")
    assert identity.recall(keyed_runtime, "spruce", subscriber) == {"contact_id": "c_1", "note_conversation_id": "n_1"}
    assert [r["subscriber_key"] for r in raw_rows(keyed, "destination_links")] == [identity_key(keyed, subscriber)]


def identity_key(app, subscriber: Subscriber) -> str:
    return identity.subscriber_key(subscriber, Runtime.of(app).config.lookup_key)
