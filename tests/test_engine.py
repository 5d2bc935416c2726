"""The delivery engine's guarantees against the sandbox: order, idempotent effects, outages,
and recovery when Redis loses its messages."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from celery.contrib.testing.worker import start_worker
from cryptography.fernet import Fernet

from relay.models import Delivery, DeliveryAttempt, Lane, utcnow
from relay.sealing import key_id
from relay.runtime import Runtime
from schemas.events import validate_event
from workers.spruce.sends import note_message_body
from testbed.apps import (
    deliver, deliveries, delivery_to, dispatch_stored, events, make_due, post_event, run_pending, run_sweep,
    sandbox_state,
)
from testbed.examples import load_fixture
from testbed.waiting import wait_for
from workers.spruce import DESTINATION as SPRUCE
from workers.spruce.client import spruce_client
from workers.spruce.delivery import CONVERSATION, NOTE, NOTE_FIRST_ATTEMPT
from workers.sweep import OVERDUE


def unlock(referrals: int) -> dict:
    payload = load_fixture("reward_unlocked")
    payload["referrals"] = payload["subscriber"]["tot_referrals"] = referrals
    payload["subscriber"]["next_reward"] = 10 - referrals
    return payload


def sprig_attributes(sandbox) -> dict:
    return sandbox_state(sandbox)["sprig"]["users"]["john.doe@email.com"]["attributes"]


def sprig_delivery_ids(app) -> list[int]:
    return [d.id for d in deliveries(app) if d.destination == "sprig"]


def test_an_older_event_delivered_late_does_not_overwrite_newer_values(client, app, sandbox):
    post_event(client, unlock(3))  # received first: older
    post_event(client, unlock(5))
    older, newer = sprig_delivery_ids(app)
    with Runtime.of(app).db.session() as session:  # catch-up work (a replay's): no live delivery waits for it
        session.execute(sa.update(Delivery).where(Delivery.id == older).values(lane=Lane.CATCH_UP))
        session.commit()
    assert deliver(app, newer) == "succeeded"
    assert deliver(app, older) == "succeeded"  # its Sprig event still counts

    attributes = sprig_attributes(sandbox)
    assert (attributes["sparkloop_total_referrals"], attributes["sparkloop_next_reward"]) == ("5", "5")
    user = sandbox_state(sandbox)["sprig"]["users"]["john.doe@email.com"]
    assert user["events"][0]["count"] == 2


def test_a_replayed_older_event_is_superseded_and_sends_nothing(client, app, sandbox):
    post_event(client, unlock(3))
    post_event(client, unlock(5))
    older, newer = sprig_delivery_ids(app)
    deliver(app, older)
    deliver(app, newer)
    calls_before = len(sandbox_state(sandbox)["requests"])
    with Runtime.of(app).db.session() as session:  # replay the older one's attributes
        delivery = session.get(Delivery, older)
        delivery.status = "pending"
        delivery.progress = {k: v for k, v in delivery.progress.items() if not k.startswith("sprig.attributes")}
        session.commit()
    assert deliver(app, older) == "superseded"

    assert len(sandbox_state(sandbox)["requests"]) == calls_before
    assert sprig_attributes(sandbox)["sparkloop_total_referrals"] == "5"


def note_text(app, event_type: str) -> str:
    """The note Relay builds from the stored payload (JSONB may reorder its keys)."""
    _, data, _ = validate_event(events(app)[0].payload)
    return SPRUCE.sends(event_type).text(data)


def note_post_failed_once(client, app, sandbox, fixture: str) -> tuple[int, str]:
    """A Spruce delivery whose note post met a 500: its contact and note conversation exist.
    Returns the delivery's id and the conversation's."""
    sandbox.configure(faults=[{"vendor": "spruce", "status": 500, "times": 1, "method": "POST",
                               "path_prefix": "/conversations/t_"}])
    post_event(client, load_fixture(fixture))
    spruce_id = delivery_to(app, "spruce").id
    assert deliver(app, spruce_id) == "retried"
    return spruce_id, delivery_to(app, "spruce").progress[CONVERSATION]


def test_a_note_that_landed_before_a_lost_answer_is_not_posted_twice(client, app, sandbox):
    spruce_id, conversation_id = note_post_failed_once(client, app, sandbox, "reward_unlocked")
    # The earlier attempt's post landed after all (its answer was lost): same key, same note.
    spruce_client(Runtime.of(app)).post_message(
        conversation_id, note_message_body(note_text(app, "reward_unlocked")),
        idempotency_key=f"relay-note-{spruce_id}")

    run_pending(app)
    assert delivery_to(app, "spruce").status == "succeeded"
    items = sandbox_state(sandbox)["spruce"]["items"][conversation_id]
    assert len(items) == 1
    statuses = [r["status"] for r in sandbox_state(sandbox)["requests"]
                if r["path"].endswith("/messages")]
    assert statuses == [500, 200, 422]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # about the breaker, not the store
def test_a_vendor_outage_opens_the_breaker_then_everything_completes(relay_app, sandbox, caplog):
    caplog.set_level(logging.INFO)
    app = relay_app(RELAY_BREAKER_COOLDOWN="1s", SPRUCE_API_TOKEN="")
    # Sprig is down for reads and writes alike.
    sandbox.configure(faults=[{"vendor": "sprig", "status": 502, "times": 6, "path_prefix": "/v2/users"}])
    for referrals in (1, 2, 3, 4):
        post_event(app.test_client(), unlock(referrals))

    def delivered_in_a_round() -> bool:
        """Every retry made due at once (their backoff doubles to 30 s and more by the sixth
        failure, and is not what this test is about); the breaker's 1 s cooldown still passes
        in real time, between the rounds."""
        pending = [d for d in deliveries(app) if d.status == "pending"]
        make_due(app)
        for delivery in pending:
            deliver(app, delivery.id)
        return not pending

    assert wait_for(delivered_in_a_round, timeout=60, interval=0.25), deliveries(app)

    assert [d.status for d in deliveries(app)] == ["succeeded"] * 4
    assert [e.status for e in events(app)] == ["done"] * 4
    logged = [r.getMessage() for r in caplog.records if r.name == "relay.breaker"]
    assert any("circuit opened for sprig" in m for m in logged)
    assert any("circuit closed for sprig" in m for m in logged)
    sprig_statuses = [r["status"] for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sprig"]
    assert sprig_statuses.count(502) == 6 and sprig_statuses.count(202) == 4


def test_after_a_redis_flush_a_starting_worker_recovers_every_pending_delivery(app, client, redis_url, sandbox):
    run_sweep(app)  # the sweep's marker is in Redis
    for referrals in (1, 2, 3):
        post_event(client, unlock(referrals))
    assert dispatch_stored(app) == 6
    assert all(d.enqueued_at is not None for d in deliveries(app))
    assert run_sweep(app)["handed_back"] == 0  # enqueued moments ago, and Redis still knows them
    redis.Redis.from_url(redis_url).flushdb()  # the queued messages are gone, the marker too

    with start_worker(app.extensions["celery"], pool="threads", concurrency=2,
                      perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
        # Its dispatcher finds the marker gone and hands all six back before it publishes (no
        # sweep here: without that, they would wait for the sweep's OVERDUE).
        assert wait_for(lambda: [e.status for e in events(app)] == ["done"] * 3)
        assert run_sweep(app)["broker_forgot"] == 0  # the worker set the marker again
    assert len(sandbox_state(sandbox)["spruce"]["items"]) == 1
    [conversation] = sandbox_state(sandbox)["spruce"]["conversations"]
    assert len(sandbox_state(sandbox)["spruce"]["items"][conversation["id"]]) == 3


def test_a_due_delivery_whose_message_was_lost_is_enqueued_again(app, client):
    run_sweep(app)
    post_event(client, unlock(1))
    dispatch_stored(app)
    assert run_sweep(app)["handed_back"] == 0  # its message is in the queue, presumably
    later = utcnow() + OVERDUE + timedelta(seconds=1)
    assert run_sweep(app, now=later)["handed_back"] == 2  # due, not taken for too long: lost
    assert dispatch_stored(app) == 2


def test_two_events_for_one_new_subscriber_create_one_contact(app, client, sandbox):
    sandbox.configure(latency_ms={"spruce": 150})
    post_event(client, unlock(1))
    post_event(client, unlock(2))
    with start_worker(app.extensions["celery"], pool="threads", concurrency=4,
                      perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
        assert wait_for(lambda: [e.status for e in events(app)] == ["done"] * 2)
    assert len(sandbox_state(sandbox)["spruce"]["contacts"]) == 1
    assert len(sandbox_state(sandbox)["spruce"]["conversations"]) == 1


def test_a_note_retried_after_the_idempotency_window_is_looked_for_first(client, app, sandbox):
    spruce_id, conversation_id = note_post_failed_once(client, app, sandbox, "reward_redeemed")
    # A day later, the note is in the conversation (posted by an attempt whose answer was lost)
    # and Spruce no longer remembers the key.
    spruce_client(Runtime.of(app)).post_message(
        conversation_id, note_message_body(note_text(app, "reward_redeemed")), idempotency_key="other-key")
    with Runtime.of(app).db.session() as session:
        stored = session.get(Delivery, spruce_id)
        first_attempt = stored.step_times[NOTE_FIRST_ATTEMPT]
        stored.step_times = stored.step_times | {NOTE_FIRST_ATTEMPT: first_attempt - 25 * 3600 * 1000}
        session.commit()

    run_pending(app)
    assert delivery_to(app, "spruce").progress[NOTE] == "found-in-conversation"
    assert len(sandbox_state(sandbox)["spruce"]["items"][conversation_id]) == 1


def test_a_paced_multi_step_delivery_moves_forward_with_every_call_it_spends(relay_app, sandbox):
    # One call per slot: each run makes one call and is deferred before the next. A read that
    # found nothing must count as progress, or the delivery would search again on every run.
    app = relay_app(SPRUCE_RATE_LIMIT="10/1s")
    post_event(app.test_client(), load_fixture("reward_unlocked"))
    run_pending(app, rounds=12, honour_waits=True)

    spruce = delivery_to(app, "spruce")
    assert spruce.status == "succeeded" and spruce.attempts - spruce.deferrals == 1
    calls = [(r["method"], r["path"].split("/")[-1]) for r in sandbox_state(sandbox)["requests"]
             if r["vendor"] == "spruce"]
    assert sorted(calls) == [("GET", "conversations"), ("POST", "contacts"), ("POST", "conversations"),
                             ("POST", "messages"), ("POST", "search")]


def test_a_running_delivery_keeps_its_lease_and_its_locks(app, client, redis_url, monkeypatch):
    from workers import lease
    from workers.run_store import RunStore
    from workers.locks import subject_locks

    monkeypatch.setattr(lease, "RENEW_EVERY_S", 0.1)
    post_event(client, unlock(1))
    r = redis.Redis.from_url(redis_url)
    with app.app_context(), Runtime.of(app).db.engine.connect() as connection:
        claim, _ = RunStore(connection).claim(sprig_delivery_ids(app)[0])
        first = deliveries(app)[0].lease_expires_at
        with subject_locks(r, "sprig", ["id:sub_1"]) as locks:
            r.pexpire(locks[0].name, 1000)  # the lock's lease nearly ran out
            with lease.kept_alive(claim, locks, Runtime.of(app)):
                time.sleep(1.5)  # longer than that: only a renewal keeps it
            assert r.pttl(locks[0].name) > 10_000
    assert deliveries(app)[0].lease_expires_at > first


def test_a_run_whose_lease_was_taken_over_changes_nothing(app, client):
    from workers.engine import Run, _finish
    from workers.run_store import RunStore

    post_event(client, unlock(1))
    delivery_id = sprig_delivery_ids(app)[0]
    runtime = Runtime.of(app)
    store = RunStore(runtime.db.engine.connect())

    def run(claim) -> Run:
        return Run(claim, event_id=1, event_type="reward_unlocked", destination="sprig", received_at=utcnow())

    stale, _ = store.claim(delivery_id)
    with runtime.session() as session:  # its worker froze past the lease
        session.execute(sa.update(Delivery).where(Delivery.id == delivery_id)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert run_sweep(app)["released"] == 1
    current, _ = store.claim(delivery_id)
    assert _finish(store, runtime, run(stale)) == "skipped"  # the stale run comes back: its outcome is dropped
    assert next(d for d in deliveries(app) if d.id == delivery_id).status == "in_flight"
    assert attempt_rows(app) == []  # nor an attempt of its own
    assert _finish(store, runtime, run(current)) == "succeeded"
    store.connection.close()
    assert attempt_rows(app) == [(delivery_id, 2, "succeeded")]


def attempt_rows(app) -> list[tuple[int, int, str]]:
    with Runtime.of(app).db.session() as session:
        return [tuple(row) for row in session.execute(
            sa.select(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt, DeliveryAttempt.outcome))]


def test_a_sprig_event_whose_answer_was_lost_is_not_counted_twice(client, app, sandbox):
    # Sprig processes the upsert, then the answer is lost (a 500 in its place).
    sandbox.configure(faults=[{"vendor": "sprig", "status": 500, "times": 1, "method": "POST",
                               "path_prefix": "/v2/users", "when": "after"}])
    post_event(client, unlock(3))
    sprig_id = sprig_delivery_ids(app)[0]
    assert deliver(app, sprig_id) == "retried"
    run_pending(app)

    sprig = delivery_to(app, "sprig")
    assert sprig.status == "succeeded" and sprig.progress["sprig.events.subscriber"] == "found-in-sprig"
    [event] = sandbox_state(sandbox)["sprig"]["users"]["john.doe@email.com"]["events"]
    assert event["count"] == 1


def test_a_sprig_event_refused_with_a_429_is_sent_again_without_a_read(client, app, sandbox):
    sandbox.configure(faults=[{"vendor": "sprig", "status": 429, "times": 1, "method": "POST",
                               "path_prefix": "/v2/users", "retry_after": 0}])
    post_event(client, unlock(3))
    run_pending(app)
    assert delivery_to(app, "sprig").status == "succeeded"
    methods = [r["method"] for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sprig"]
    assert methods == ["POST", "POST"]  # no read-back: a 429 means nothing landed
    [event] = sandbox_state(sandbox)["sprig"]["users"]["john.doe@email.com"]["events"]
    assert event["count"] == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # about the throttle, not the store
def test_a_sprig_delivery_the_throttle_held_back_sends_without_reading_back(relay_app, sandbox):
    # Two calls go at once; the third waits for the window (6 s: longer than a worker naps,
    # however slowly a loaded machine runs the first two).
    app = relay_app(SPRIG_RATE_LIMIT="2/6s", SPRUCE_API_TOKEN="")
    client = app.test_client()
    for n in range(3):
        payload = unlock(1)
        payload["subscriber"].update(id=f"sub_paced{n}", email=f"paced{n}@example.com")
        post_event(client, payload)
    run_pending(app, rounds=8, honour_waits=True)
    assert {d.status for d in deliveries(app)} == {"succeeded"}
    assert sum(d.deferrals for d in deliveries(app)) >= 1  # the throttle held some back
    methods = [r["method"] for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sprig"]
    assert methods == ["POST"] * 3


def test_a_worker_without_the_key_that_sealed_a_payload_defers_naming_the_key_id(relay_app, sandbox, caplog):
    key_a, key_b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    post_event(relay_app(RELAY_PAYLOAD_KEYS=key_a).test_client(), unlock(3))
    # One process forgotten in a key rotation: it holds only the new key. An earlier deferral
    # of Relay's own left its reason behind.
    only_b = relay_app(RELAY_PAYLOAD_KEYS=key_b)
    with Runtime.of(only_b).db.session() as session:
        session.execute(sa.update(Delivery).values(last_error="another delivery for this subscriber is running"))
        session.commit()

    assert [deliver(only_b, d.id) for d in deliveries(only_b)] == ["deferred", "deferred"]
    for delivery in deliveries(only_b):
        assert (delivery.status, delivery.attempts, delivery.deferrals) == ("pending", 1, 1)  # no retry spent
        assert f"key id {key_id(key_a)}" in delivery.last_error and "RELAY_PAYLOAD_KEYS" in delivery.last_error
        assert key_a not in delivery.last_error and key_b not in delivery.last_error
        assert delivery.next_attempt_at >= utcnow() + timedelta(minutes=4)  # waits: not a hot loop
        assert delivery.enqueued_at is None
        assert deliver(only_b, delivery.id) == "skipped"  # not due yet
    assert sandbox_state(sandbox)["requests"] == []
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "deliveries wait" in r.getMessage()]
    assert len(warned) == 1 and key_id(key_a) in warned[0]  # once per process and key, not per delivery

    both = relay_app(RELAY_PAYLOAD_KEYS=f"{key_b},{key_a}")  # the key is back
    run_pending(both)
    assert [d.status for d in deliveries(both)] == ["succeeded", "succeeded"]
