"""The audit log: each operator action of the CLI (replay, reveal, forget, unlink, purge, key
rotation; users changes in test_users.py) leaves one entry, written by the operation, with its
outcome; `relay audit list` shows them newest first; and no entry holds a payload's personal value.
Through the CLI runner, on SQLite and PostgreSQL, Redis and the sandbox."""
from __future__ import annotations

import getpass
import json

import pytest
import redis
import sqlalchemy as sa
from cryptography.fernet import Fernet

import operations.replay
from operations import audit
from operations.audit import Actor
from relay.models import AuditEntry
from relay.runtime import Runtime
from schemas.personal import personal_strings
from testbed.apps import delivery_to, events, post_event, received_days_ago, run_pending
from testbed.cli import invoke
from testbed.examples import load_fixture
from testbed.privacy import leaked
from workers import erasure
from web.cli import main
from workers.locks import subject_locks

OPERATOR = "lead@clinic.example"


def entries(app) -> list[dict]:
    with Runtime.of(app).db.session() as session:
        return [audit.entry_summary(e) for e in session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))]


def fail_spruce(sandbox):
    sandbox.configure(faults=[{"vendor": "spruce", "status": 400, "times": None, "method": "POST",
                               "path_prefix": "/contacts"}])


def table(app, *args) -> str:
    """`relay audit list`'s table, on a terminal wide enough for a row a line."""
    result = app.test_cli_runner().invoke(main, ["audit", "list", *args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def person_ref(app, email: str) -> str:
    return erasure.reference(erasure.Person.given(email), Runtime.of(app).config)


@pytest.fixture
def app(relay_app):
    return relay_app(RELAY_OPERATOR=OPERATOR)


def test_each_action_leaves_one_entry_with_ids_and_digests_and_no_personal_value(app, client, sandbox):
    referral, unlock = load_fixture("new_referral"), load_fixture("reward_unlocked")
    for payload in (referral, unlock):
        assert post_event(client, payload).status_code == 200
    fail_spruce(sandbox)
    run_pending(app)
    sandbox.configure(faults=[])
    first, second = [e.id for e in events(app)]
    spruce = delivery_to(app, "spruce").id

    assert invoke(app, "events", "replay", "--status", "failed", "--dry-run").exit_code == 0  # a look: not audited
    assert invoke(app, "events", "replay", "--status", "failed", "--yes").exit_code == 0
    assert invoke(app, "events", "show", str(first)).exit_code == 0  # masked: not audited
    revealed = invoke(app, "events", "show", str(first), "--reveal")
    assert revealed.exit_code == 0 and referral["subscriber"]["email"] in revealed.output
    run_pending(app)
    email = unlock["subscriber"]["email"]
    assert invoke(app, "subscribers", "unlink", email).exit_code == 0
    assert invoke(app, "subscribers", "forget", email, "--yes").exit_code == 0

    logged = entries(app)
    assert [(e["action"], e["outcome"], e["actor"], e["interface"], e["address"]) for e in logged] == [
        ("events.replay", "ok", OPERATOR, "cli", None),
        ("events.reveal", "ok", OPERATOR, "cli", None),
        ("subscribers.unlink", "ok", OPERATOR, "cli", None),
        ("subscribers.forget", "ok", OPERATOR, "cli", None),
    ]
    replay, reveal, unlink, forget = logged
    assert replay["targets"]["events"] == [first, second] and spruce in replay["targets"]["deliveries"]
    assert replay["details"]["force"] is False
    assert reveal["targets"] == {"events": [first]}
    assert unlink["targets"] == forget["targets"] == {"person": person_ref(app, email)}
    assert forget["details"]["events_deleted"] >= 1

    personal = personal_strings(referral) | personal_strings(unlock)
    assert email in personal
    listed = table(app) + invoke(app, "audit", "list", "--json").output
    for text in (json.dumps(logged), listed):
        assert not [value for value in personal if leaked(value, text)], text


def test_the_cli_acts_as_the_os_user_without_relay_operator(relay_app):
    app = relay_app()
    assert post_event(app.test_client(), load_fixture("reward_unlocked")).status_code == 200
    assert invoke(app, "events", "show", "1", "--reveal").exit_code == 0
    [entry] = entries(app)
    assert (entry["actor"], entry["interface"]) == (getpass.getuser(), "cli")


def test_a_reveal_of_no_event_is_refused_and_recorded(app):
    result = invoke(app, "events", "show", "42", "--reveal")
    assert result.exit_code == 2
    [entry] = entries(app)
    assert (entry["action"], entry["targets"], entry["outcome"], entry["reason"]) == (
        "events.reveal", {"events": [42]}, "refused", "no such event")


def test_an_interrupted_replay_is_recorded_as_failed_with_what_it_replayed(app, client, sandbox, monkeypatch):
    for n in range(3):
        payload = load_fixture("reward_unlocked")
        payload["subscriber"]["id"] = f"sub_unlock{n}"
        assert post_event(client, payload).status_code == 200
    fail_spruce(sandbox)
    run_pending(app)
    monkeypatch.setattr(operations.replay, "BATCH", 1)
    real_batches = operations.replay._batches

    def interrupted_after_one_batch(ids):
        for n, batch in enumerate(real_batches(ids)):
            if n == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(operations.replay, "_batches", interrupted_after_one_batch)
    assert invoke(app, "events", "replay", "--status", "failed", "--yes").exit_code == 130

    [entry] = entries(app)
    assert (entry["outcome"], entry["reason"]) == ("failed", "interrupted")
    assert entry["targets"]["events"] == [1, 2, 3] and len(entry["targets"]["deliveries"]) == 1


def test_a_forget_refused_because_a_delivery_holds_the_lock_is_recorded(app, client, sandbox, monkeypatch):
    unlock = load_fixture("reward_unlocked")
    assert post_event(client, unlock).status_code == 200
    monkeypatch.setattr(erasure, "LOCK_WAIT_S", 0.5)
    held = redis.Redis.from_url(Runtime.of(app).config.redis_url)
    with subject_locks(held, "spruce", [f"id:{unlock['subscriber']['id']}"]):
        assert invoke(app, "subscribers", "forget", unlock["subscriber"]["id"], "--yes").exit_code == 1
    held.close()
    [entry] = entries(app)
    assert (entry["action"], entry["outcome"]) == ("subscribers.forget", "refused")
    assert entry["reason"].startswith("busy")
    assert entry["targets"] == {"person": person_ref(app, unlock["subscriber"]["id"])}


def test_a_forget_a_vendor_refused_is_recorded_as_failed_naming_the_vendor(app, client, sandbox):
    unlock = load_fixture("reward_unlocked")
    assert post_event(client, unlock).status_code == 200
    sandbox.configure(faults=[{"vendor": "sprig", "status": 500, "times": None, "path": "/v2/purge/visitors",
                               "echo": True}])
    assert invoke(app, "subscribers", "forget", unlock["subscriber"]["email"], "--yes", "--purge", "sprig").exit_code == 1
    [entry] = entries(app)
    assert (entry["outcome"], entry["reason"]) == ("failed", "sprig did not take the erasure request (HTTP 500)")
    assert entry["details"] == {"purge": ["sprig"]}
    assert not [value for value in personal_strings(unlock) if leaked(value, json.dumps(entry))]


def test_purge_and_key_rotation_are_recorded_with_their_counts(relay_app):
    app = relay_app(RELAY_OPERATOR=OPERATOR, RELAY_PAYLOAD_KEYS=Fernet.generate_key().decode())
    web = app.test_client()
    for n in range(3):
        payload = load_fixture("reward_unlocked")
        payload["subscriber"]["id"] = f"sub_old{n}"
        assert post_event(web, payload).status_code == 200
    with Runtime.of(app).db.session() as session:  # finished, as if delivered long ago
        session.execute(sa.text("UPDATE events SET status = 'done'"))
        session.commit()
    received_days_ago(app, 1, 10)
    received_days_ago(app, 2, 10)

    rotating = relay_app(RELAY_OPERATOR=OPERATOR, RELAY_PAYLOAD_KEYS=f"{Fernet.generate_key().decode()},"
                                                                     f"{Runtime.of(app).config.payload_keys[0]}")
    assert invoke(rotating, "keys", "rotate").exit_code == 0
    assert invoke(app, "events", "purge", "--older-than", "7d", "--dry-run").exit_code == 0  # not audited
    assert invoke(app, "events", "purge", "--older-than", "7d", "--yes").exit_code == 0

    rotate, purge = entries(app)
    assert (rotate["action"], rotate["outcome"], rotate["details"]) == (
        "keys.rotate", "ok", {"digests": False, "events": 3})
    assert (purge["action"], purge["outcome"]) == ("events.purge", "ok")
    assert purge["details"] == {"older_than_s": 7 * 86400, "failed_older_than_s": 90 * 86400, "purged": 2,
                                "complete": True}


def test_audit_list_is_newest_first_and_filters_by_actor_and_action(app):
    runtime = Runtime.of(app)
    console = Actor("ann@clinic.example", "console", "203.0.113.7")
    for actor, action, targets in [
        (Actor.cli("bob"), "events.replay", {"events": list(range(1, 1200)), "deliveries": []}),
        (console, "events.reveal", {"events": [7]}),
        (console, "users.add", {"account": "new@clinic.example"}),
        (Actor.cli("bob"), "keys.rotate", {}),
    ]:
        audit.record(runtime, actor, action, targets)

    def listed(*args) -> list[dict]:
        result = invoke(app, "audit", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    assert [e["action"] for e in listed()] == ["keys.rotate", "users.add", "events.reveal", "events.replay"]
    assert [e["action"] for e in listed("--actor", "ann@clinic.example")] == ["users.add", "events.reveal"]
    assert [e["action"] for e in listed("--action", "events")] == ["events.reveal", "events.replay"]
    assert [e["action"] for e in listed("--action", "events.reveal")] == ["events.reveal"]
    assert listed("--action", "event") == []  # a group is a whole word
    assert [e["action"] for e in listed("--limit", "1")] == ["keys.rotate"]
    assert listed("--action", "events.reveal")[0]["address"] == "203.0.113.7"

    text = table(app)
    assert "console 203.0.113.7" in text and "ann@clinic.example" in text and "account new@clinic.example" in text
    assert "no audit entry matches" in invoke(app, "audit", "list", "--actor", "nobody").output


def test_an_entry_lists_at_most_max_ids_and_counts_them_all(app):
    runtime = Runtime.of(app)
    with audit.audited(runtime, Actor.cli("bob"), "events.replay") as entry:
        entry.ids("events", range(1, audit.MAX_IDS + 11))
    [logged] = entries(app)
    assert len(logged["targets"]["events"]) == audit.MAX_IDS and logged["details"] == {
        "events_total": audit.MAX_IDS + 10}
    assert f"events 1, 2, 3, 4, 5 (+{audit.MAX_IDS + 5} more)" in table(app)
