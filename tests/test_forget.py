"""`relay subscribers forget`: an erasure request, through the CLI runner, on the real store (SQLite
and PostgreSQL), Redis and the sandbox over HTTP."""
from __future__ import annotations

import json
import logging
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import sqlalchemy as sa
from cryptography.fernet import Fernet

from relay.models import Delivery, Event, EventSubject, DestinationLink
from relay.runtime import Runtime
from testbed import vendor_contracts as contracts
from relay.subjects import email_digest, id_digest
from testbed.apps import deliver, deliveries, events, post_event, run_pending, sandbox_state
from testbed.examples import load_fixture
from testbed.waiting import wait_for
from web.cli import main
from workers import erasure
from workers.locks import subject_locks


def person(name: str, n: int) -> dict:
    first, last = name.split()
    code = f"{first.lower()}c0de{n}"
    return {"id": f"sub_{first.lower()}{n:07d}", "first_name": first, "name": name,
            "email": f"{first.lower()}.{last.lower()}@example.com", "referral_code": code,
            "referral_link": f"https://example.com/?rh_ref={code}", "referred": True,
            "tot_referrals": n, "next_reward": 2, "created_at": 1564400550 + n}


ANN, BOB, CARL = person("Ann Erasmus", 1), person("Bob Keeper", 2), person("Carl Other", 3)


def their_strings(someone: dict) -> list[str]:
    return [someone["email"], someone["name"], someone["id"], someone["referral_link"]]


def referral(subscriber: dict, referrer: dict) -> dict:
    return load_fixture("new_referral") | {"subscriber": dict(subscriber), "referrer": dict(referrer)}


def unlock(subscriber: dict) -> dict:
    return load_fixture("reward_unlocked") | {"subscriber": dict(subscriber)}


def invoke(app, *args, input=None):
    return app.test_cli_runner().invoke(main, ["subscribers", "forget", *args], input=input)


def store(app) -> dict[str, list]:
    """Every row of every table, payloads opened: to tell what changed."""
    with Runtime.of(app).db.session() as session:
        return {
            "events": [(e.id, e.type, e.status, e.dedup_key, e.payload, e.errors) for e in
                       session.scalars(sa.select(Event).order_by(Event.id))],
            "deliveries": [(d.id, d.event_id, d.status, d.last_error, d.progress) for d in
                           session.scalars(sa.select(Delivery).order_by(Delivery.id))],
            "subjects": sorted(session.execute(sa.select(EventSubject.event_id, EventSubject.kind,
                                                         EventSubject.digest)).all()),
            "links": sorted(session.execute(sa.select(DestinationLink.subscriber_key, DestinationLink.destination,
                                                      DestinationLink.data)).all()),
        }


def post_all(client) -> dict[str, int]:
    """Ann's own events (one invalid), Carl's referral that names Ann as referrer, Bob's unlock."""
    posted = {}
    for name, payload in [("ann_referral", referral(ANN, BOB)), ("ann_unlock", unlock(ANN)),
                          ("ann_invalid", {"type": "new_referral", "subscriber": {"email": ANN["email"]}}),
                          ("carl_referral", referral(CARL, ANN)), ("bob_unlock", unlock(BOB))]:
        response = post_event(client, payload)
        assert response.status_code == (400 if name == "ann_invalid" else 200), response.get_data(as_text=True)
        posted[name] = max(e.id for e in events(client.application))
    return posted


def reveal_all(app) -> str:
    """What `events list` and `events show --reveal` show of every stored event."""
    runner = app.test_cli_runner()
    listed = runner.invoke(main, ["events", "list", "--json", "--limit", "1000"])
    assert listed.exit_code == 0, listed.output
    shown = [runner.invoke(main, ["events", "show", str(e["id"]), "--reveal", "--json"]).output
             for e in json.loads(listed.output)]
    return listed.output + "".join(shown)


def stats_counts(app) -> dict[tuple[str, str], int]:
    result = app.test_cli_runner().invoke(main, ["events", "stats", "--json"])
    assert result.exit_code == 0, result.output
    return {(row["type"], row["status"]): row["count"] for row in json.loads(result.output)["events"]}


def leaks(someone: dict, text: str) -> list[str]:
    return [value for value in their_strings(someone) if value.lower() in text.lower()]


# --- the erasure ----------------------------------------------------------------------------


def test_forget_deletes_their_events_and_links_and_anonymizes_them_elsewhere(app, client, sandbox, caplog):
    posted = post_all(client)
    run_pending(app)
    assert leaks(ANN, reveal_all(app))  # shown before, so the checks below can see it go
    before = store(app)
    bob_event = next(e for e in before["events"] if e[0] == posted["bob_unlock"])
    bob_deliveries = [d for d in before["deliveries"] if d[1] == posted["bob_unlock"]]

    with caplog.at_level(logging.INFO, logger="relay.erasure"):
        result = invoke(app, ANN["email"].upper(), "--yes")

    assert result.exit_code == 0, result.output
    assert not leaks(ANN, result.output) and "person-" in result.output
    assert "their events deleted: 3" in result.output
    assert "anonymized: 1" in result.output
    assert "clinical record" in result.output
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "person-" in logged and not leaks(ANN, logged)

    assert not leaks(ANN, reveal_all(app))
    after = store(app)
    remaining = {e[0]: e for e in after["events"]}
    assert set(remaining) == {posted["carl_referral"], posted["bob_unlock"]}
    assert remaining[posted["bob_unlock"]] == bob_event  # everyone else's data untouched
    assert [d for d in after["deliveries"] if d[1] == posted["bob_unlock"]] == bob_deliveries
    carl_event = remaining[posted["carl_referral"]]
    assert carl_event[4]["referrer"] == {"erased": True}
    assert carl_event[4]["subscriber"] == CARL | {"email": CARL["email"]}
    assert carl_event[3] != next(e[3] for e in before["events"] if e[0] == posted["carl_referral"])
    assert not leaks(ANN, repr(after))

    ann_digests = {email_digest(ANN["email"], None), id_digest(ANN["id"], None)}
    assert not [s for s in after["subjects"] if s[2] in ann_digests]
    assert {s for s in before["subjects"] if s[2] not in ann_digests and s[0] in remaining} \
        == set(after["subjects"])
    assert {f"id:{ANN['id']}"} == {key for key, _, _ in before["links"]} - {key for key, _, _ in after["links"]}
    assert sorted({key for key, _, _ in after["links"]}) == sorted(f"id:{p['id']}" for p in (BOB, CARL))
    assert [link for link in before["links"] if link[0] != f"id:{ANN['id']}"] == after["links"]
    assert stats_counts(app) == {("new_referral", "done"): 1, ("reward_unlocked", "done"): 1}


def test_forget_by_subscriber_id_finds_their_email_too(app, client, sandbox):
    post_all(client)
    run_pending(app)

    result = invoke(app, ANN["id"], "--yes", "--purge", "sprig")

    assert result.exit_code == 0, result.output
    assert not leaks(ANN, result.output)
    assert not leaks(ANN, repr(store(app)))
    purge = sandbox_state(sandbox)["sprig"]["purges"][-1]
    # SPRIG_USER_ID_SOURCE=email (the default): Relay gave Sprig the email as userId.
    assert purge["userIds"] == [ANN["email"]] and purge["emails"] == [ANN["email"]]


def test_sealed_payloads_and_digests_from_before_the_lookup_key_are_found(relay_app, sandbox):
    payload_key, lookup_key = Fernet.generate_key().decode(), "k" * 32
    before_the_key = relay_app(RELAY_PAYLOAD_KEYS=payload_key)
    post_event(before_the_key.test_client(), referral(CARL, ANN))
    post_event(before_the_key.test_client(), unlock(ANN))
    app = relay_app(RELAY_PAYLOAD_KEYS=payload_key, RELAY_LOOKUP_KEY=lookup_key)
    post_event(app.test_client(), referral(ANN, BOB))

    result = invoke(app, ANN["email"], "--yes")

    assert result.exit_code == 0, result.output
    assert "their events deleted: 2" in result.output and "anonymized: 1" in result.output
    [carl_event] = events(app)
    assert carl_event.payload["referrer"] == {"erased": True}
    with Runtime.of(app).db.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT payload FROM events")).scalar_one()
    assert "sealed" in str(stored) and CARL["email"] not in str(stored)  # sealed again, not in clear
    ann_digests = {email_digest(ANN["email"], key) for key in (None, lookup_key)} | \
                  {id_digest(ANN["id"], key) for key in (None, lookup_key)}
    assert not [s for s in store(app)["subjects"] if s[2] in ann_digests]
    assert erasure.reference(erasure.Person.given(ANN["email"]), app.config["RELAY"]) in result.output


def test_dry_run_changes_nothing_and_says_what_would_go(app, client, sandbox):
    post_all(client)
    run_pending(app)
    before = store(app)
    requests_before = len(sandbox_state(sandbox)["requests"])

    result = invoke(app, ANN["email"], "--dry-run", "--purge", "sprig")

    assert result.exit_code == 0, result.output
    assert "to delete: 3" in result.output and "would ask to purge 1 userId(s)" in result.output
    assert "nothing changed" in result.output
    assert store(app) == before
    assert len(sandbox_state(sandbox)["requests"]) == requests_before


def test_running_it_twice_is_harmless(app, client, sandbox):
    post_all(client)
    run_pending(app)
    first = invoke(app, ANN["email"], "--yes", "--purge", "sprig")
    assert first.exit_code == 0, first.output
    after_first = store(app)

    second = invoke(app, ANN["email"], "--yes", "--purge", "sprig")

    assert second.exit_code == 0, second.output
    assert "holds nothing of them" in second.output
    assert store(app) == after_first
    assert len(sandbox_state(sandbox)["sprig"]["purges"]) == 2


def test_purge_sprig_reaches_the_sandbox_with_bearer_auth_and_schedules_the_visitor(app, client, sandbox):
    post_event(client, unlock(ANN))
    post_event(client, unlock(BOB))
    run_pending(app)
    assert ANN["email"] in sandbox_state(sandbox)["sprig"]["users"]

    result = invoke(app, ANN["email"], "--yes", "--purge", "sprig")

    assert result.exit_code == 0, result.output
    assert "purge requested" in result.output
    state = sandbox_state(sandbox)
    [purge] = state["sprig"]["purges"]
    assert purge["userIds"] == [ANN["email"]] and not purge["done"]
    assert purge["requestId"] in result.output
    assert purge["purgeAt"] - purge["submittedAt"] == pytest.approx(10 * 86400)  # Sprig's default delay
    assert [r["status"] for r in state["requests"] if r["path"] == "/v2/purge/visitors"] == [200]
    assert set(state["sprig"]["users"]) == {ANN["email"], BOB["email"]}  # scheduled, not gone yet


@pytest.mark.skipif(not contracts.DOCUMENTS.is_dir(), reason="the vendors' OpenAPI documents are not here")
def test_the_purge_request_and_answer_follow_sprigs_document(app, client, sandbox, recorded):
    post_event(client, unlock(ANN))
    run_pending(app)
    recorded.clear()

    result = invoke(app, ANN["email"], "--yes", "--purge", "sprig")

    assert result.exit_code == 0, result.output
    [purge] = [e for e in recorded if urlsplit(e.url).path.endswith("/v2/purge/visitors")]
    assert purge.request_headers["authorization"] == "Bearer sandbox-sprig-key"
    assert contracts.problems([purge]) == []


def test_their_unsent_deliveries_are_never_sent(app, client, sandbox):
    post_event(client, unlock(ANN))
    post_event(client, referral(CARL, ANN))
    post_event(client, unlock(BOB))

    result = invoke(app, ANN["email"], "--yes")
    run_pending(app)

    assert result.exit_code == 0, result.output
    assert "ended unsent: 2" in result.output  # Carl's referral: its Sprig and Spruce deliveries
    state = sandbox_state(sandbox)
    assert set(state["sprig"]["users"]) == {BOB["email"]}
    assert not leaks(ANN, json.dumps(state["sprig"]) + json.dumps(state["spruce"]))
    carl = [d for d in deliveries(app) if d.event_id == events(app)[-2].id]
    assert {d.status for d in carl} == {"failed"} and all("erased" in d.last_error for d in carl)


def test_a_delivery_running_meanwhile_ends_harmlessly(app, client, sandbox):
    post_event(client, unlock(ANN))
    sprig = next(d for d in deliveries(app) if d.destination == "sprig")
    sandbox.configure(latency_ms={"sprig": 1500})
    outcome = []
    running = threading.Thread(target=lambda: outcome.append(deliver(app, sprig.id)))
    running.start()
    assert wait_for(lambda: any(d.status == "in_flight" for d in deliveries(app)), timeout=10)

    result = invoke(app, ANN["email"], "--yes")
    running.join(timeout=30)

    assert result.exit_code == 0, result.output
    assert outcome and outcome[0] in ("succeeded", "skipped")
    assert events(app) == [] and deliveries(app) == []
    with Runtime.of(app).db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DestinationLink)) == 0


def test_a_person_whose_lock_stays_held_is_left_as_it_was(app, client, sandbox, monkeypatch):
    post_event(client, unlock(ANN))
    before = store(app)
    monkeypatch.setattr(erasure, "LOCK_WAIT_S", 0.5)
    client_redis = redis.Redis.from_url(app.config["RELAY"].redis_url)
    with subject_locks(client_redis, "spruce", [f"id:{ANN['id']}"]):  # a delivery sending
        result = invoke(app, ANN["email"], "--yes")

    assert result.exit_code == 1
    assert "nothing changed" in result.output and not leaks(ANN, result.output)
    assert store(app) == before


def test_a_sprig_refusal_leaves_the_store_as_it_was(app, client, sandbox):
    post_event(client, unlock(ANN))
    before = store(app)
    sandbox.configure(faults=[{"vendor": "sprig", "status": 500, "times": None, "path": "/v2/purge/visitors",
                               "echo": True}])

    result = invoke(app, ANN["email"], "--yes", "--purge", "sprig")

    assert result.exit_code == 1
    assert "nothing changed in Relay's store" in result.output
    assert not leaks(ANN, result.output)
    assert store(app) == before


# --- bad input: exit 2, one line, nothing changed ---------------------------------------------


@pytest.mark.parametrize("args, message", [
    ([""], "is empty"),
    (["   "], "is empty"),
    (["ann@"], "is not an email address"),
    (["ann smith@example.com"], "is not an email address"),
    (["sub 1"], "neither an email nor a subscriber id"),
    (["sub_1;drop"], "neither an email nor a subscriber id"),
    ([], "Missing argument"),
    (["sub_1", "--bogus"], "No such option"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(app, client, args, message):
    post_event(client, unlock(ANN))
    before = store(app)

    result = invoke(app, *args, "--yes")

    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]
    assert store(app) == before


def test_without_yes_and_no_terminal_it_refuses(app, client):
    post_event(client, unlock(ANN))
    before = store(app)

    result = invoke(app, ANN["email"], input="y\n")

    assert result.exit_code == 2
    assert "pass --yes" in result.output
    assert store(app) == before


def test_purge_sprig_without_a_sprig_key_is_bad_input(relay_app):
    app = relay_app(SPRIG_API_KEY="")

    result = invoke(app, ANN["email"], "--yes", "--purge", "sprig")

    assert result.exit_code == 2
    assert "SPRIG_API_KEY" in result.output


def test_help(app):
    result = invoke(app, "--help")
    assert result.exit_code == 0
    assert "--purge DESTINATION" in result.output and "(sprig)" in result.output
    assert "--dry-run" in result.output and "--yes" in result.output
    assert "--purge-sprig" not in result.output  # deprecated, hidden


def test_purge_names_a_destination_that_takes_an_erasure_request(app, client):
    post_event(client, unlock(ANN))
    before = store(app)

    result = invoke(app, ANN["email"], "--yes", "--purge", "spruce")

    assert result.exit_code == 2
    assert "'spruce' takes no erasure request (choose from sprig)" in result.output
    assert store(app) == before


def test_the_deprecated_purge_sprig_still_purges_and_says_so(app, client, sandbox):
    post_event(client, unlock(ANN))
    run_pending(app)

    result = invoke(app, ANN["email"], "--yes", "--purge-sprig")

    assert result.exit_code == 0, result.output
    assert "--purge-sprig is deprecated: use --purge sprig" in result.output
    assert "Sprig: purge requested" in result.output
    assert len(sandbox_state(sandbox)["sprig"]["purges"]) == 1


# --- the sandbox's purge ------------------------------------------------------------------------


def sprig_post(sandbox, body, scheme="Bearer"):
    return httpx.post(f"{sandbox.sprig_url}/v2/purge/visitors", json=body, timeout=5,
                      headers={"Authorization": f"{scheme} sandbox-sprig-key"})


def test_sandbox_purge_follows_sprigs_contract(sandbox):
    sandbox.reset()
    upsert = httpx.post(f"{sandbox.sprig_url}/v2/users", json={"userId": "u1", "emailAddress": "u1@example.com"},
                        headers={"Authorization": "API-Key sandbox-sprig-key"}, timeout=5)
    assert upsert.status_code == 202
    assert sprig_post(sandbox, {"userIds": ["u1"]}, scheme="API-Key").status_code == 403
    assert sprig_post(sandbox, {}).status_code == 400
    assert sprig_post(sandbox, {"userIds": [f"u{n}" for n in range(101)]}).status_code == 400
    assert sprig_post(sandbox, {"externalUserIds": ["u1"]}).status_code == 400

    later = sprig_post(sandbox, {"userIds": ["u1"]})
    assert later.status_code == 200 and later.json()["requestId"]
    assert "u1" in sandbox.snapshot()["sprig"]["users"]  # ten days from now
    at_once = sprig_post(sandbox, {"emails": ["U1@example.com"], "delaySeconds": 0})
    assert at_once.status_code == 200
    assert sandbox.snapshot()["sprig"]["users"] == {}
    assert [p["purged"] for p in sandbox.snapshot()["sprig"]["purges"]] == [None, 1]


def test_the_client_purges_in_requests_of_at_most_100(app, sandbox):
    from workers.sprig.client import sprig_client

    request_ids = sprig_client(Runtime.of(app)).purge_visitors(
        user_ids=[f"u{n}" for n in range(150)], emails=["a@example.com"])

    purges = sandbox.snapshot()["sprig"]["purges"]
    assert [len(p["userIds"]) + len(p["emails"]) for p in purges] == [100, 51]
    assert request_ids == [p["requestId"] for p in purges]


def test_sandbox_runs_a_purge_once_it_is_due(sandbox):
    sandbox.reset()
    httpx.post(f"{sandbox.sprig_url}/v2/users", json={"userId": "u2"},
               headers={"Authorization": "API-Key sandbox-sprig-key"}, timeout=5)
    assert sprig_post(sandbox, {"userIds": ["u2"], "delaySeconds": 1}).status_code == 200
    time.sleep(1.1)

    read = httpx.get(f"{sandbox.sprig_url}/v2/users/u2", headers={"Authorization": "API-Key sandbox-sprig-key"},
                     timeout=5)

    assert read.status_code == 404
    assert sandbox.snapshot()["sprig"]["purges"][0]["done"]
