"""The delivery engine's guarantees against the sandbox: order, idempotent effects, outages,
and recovery when Redis loses its messages."""
from __future__ import annotations

import logging
from datetime import timedelta

import redis
from celery.contrib.testing.worker import start_worker

from tests.conftest import deliveries, events, load_fixture, post_event
from tests.test_delivery import run_pending, sandbox_state
from tests.test_pipeline import wait_for
from web.models import Delivery, utcnow
from workers.delivery import run_delivery
from workers.sweep import sweep


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
    with app.app_context():
        assert run_delivery(newer) == "succeeded"
        assert run_delivery(older) == "succeeded"  # its Sprig event still counts

    attributes = sprig_attributes(sandbox)
    assert (attributes["sparkloop_total_referrals"], attributes["sparkloop_next_reward"]) == ("5", "5")
    user = sandbox_state(sandbox)["sprig"]["users"]["john.doe@email.com"]
    assert user["events"][0]["count"] == 2


def test_a_replayed_older_event_is_superseded_and_sends_nothing(client, app, sandbox):
    post_event(client, unlock(3))
    post_event(client, unlock(5))
    older, newer = sprig_delivery_ids(app)
    with app.app_context():
        run_delivery(older)
        run_delivery(newer)
    calls_before = len(sandbox_state(sandbox)["requests"])
    with app.extensions["relay.db"].session() as session:  # replay the older one's attributes
        delivery = session.get(Delivery, older)
        delivery.status = "pending"
        delivery.steps = {k: v for k, v in delivery.steps.items() if not k.startswith("sprig.attributes")}
        session.commit()
    with app.app_context():
        assert run_delivery(older) == "superseded"

    assert len(sandbox_state(sandbox)["requests"]) == calls_before
    assert sprig_attributes(sandbox)["sparkloop_total_referrals"] == "5"


def test_a_note_that_landed_before_a_lost_answer_is_not_posted_twice(client, app, sandbox):
    from workers.clients import spruce_client
    from schemas.spruce import note_message_body

    sandbox.configure(faults=[{"vendor": "spruce", "status": 500, "times": 1, "method": "POST",
                               "path_prefix": "/conversations/t_"}])
    post_event(client, load_fixture("reward_unlocked"))
    spruce_id = next(d.id for d in deliveries(app) if d.destination == "spruce")
    with app.app_context():
        assert run_delivery(spruce_id) == "pending"
    steps = next(d for d in deliveries(app) if d.id == spruce_id).steps
    # The earlier attempt's post landed after all (its answer was lost): same key, same note.
    client_ = spruce_client(app.config["RELAY"])
    client_.post_message(steps["spruce.conversation"], note_message_body("reward_unlocked", {
        **load_fixture("reward_unlocked")}), idempotency_key=f"relay-note-{spruce_id}")

    run_pending(app)
    assert next(d for d in deliveries(app) if d.id == spruce_id).status == "succeeded"
    items = sandbox_state(sandbox)["spruce"]["items"][steps["spruce.conversation"]]
    assert len(items) == 1
    statuses = [r["status"] for r in sandbox_state(sandbox)["requests"]
                if r["path"].endswith("/messages")]
    assert statuses == [500, 200, 422]


def test_a_vendor_outage_opens_the_breaker_then_everything_completes(environ, sandbox, caplog):
    from web import create_app

    caplog.set_level(logging.INFO)
    app = create_app({**environ, "RELAY_BREAKER_COOLDOWN": "1s", "SPRUCE_API_TOKEN": ""})
    app.extensions["relay.db"].upgrade()
    sandbox.configure(faults=[{"vendor": "sprig", "status": 502, "times": 6, "method": "POST",
                               "path_prefix": "/v2/users"}])
    for referrals in (1, 2, 3, 4):
        post_event(app.test_client(), unlock(referrals))
    run_pending(app, rounds=40, honour_waits=True)

    assert [d.status for d in deliveries(app)] == ["succeeded"] * 4
    assert [e.status for e in events(app)] == ["done"] * 4
    logged = [r.getMessage() for r in caplog.records if r.name == "relay.coordination"]
    assert any("circuit opened for sprig" in m for m in logged)
    assert any("circuit closed for sprig" in m for m in logged)
    sprig_statuses = [r["status"] for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sprig"]
    assert sprig_statuses.count(502) == 6 and sprig_statuses.count(202) == 4


def test_after_a_redis_flush_the_sweep_recovers_every_pending_delivery(app, client, redis_url, sandbox):
    for referrals in (1, 2, 3):
        post_event(client, unlock(referrals))
    assert all(d.enqueued_at is not None for d in deliveries(app))
    redis.Redis.from_url(redis_url).flushdb()  # the queued messages are gone

    with start_worker(app.extensions["celery"], pool="threads", concurrency=2,
                      perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
        with app.app_context():
            assert sweep()["enqueued"] == 0  # enqueued moments ago: not presumed lost yet
            assert sweep(now=utcnow() + timedelta(minutes=6))["enqueued"] == 6
        assert wait_for(lambda: [e.status for e in events(app)] == ["done"] * 3)
    assert len(sandbox_state(sandbox)["spruce"]["items"]) == 1
    [conversation] = sandbox_state(sandbox)["spruce"]["conversations"]
    assert len(sandbox_state(sandbox)["spruce"]["items"][conversation["id"]]) == 3


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
    sandbox.configure(faults=[{"vendor": "spruce", "status": 500, "times": 1, "method": "POST",
                               "path_prefix": "/conversations/t_"}])
    post_event(client, load_fixture("reward_redeemed"))
    spruce_id = next(d.id for d in deliveries(app) if d.destination == "spruce")
    with app.app_context():
        assert run_delivery(spruce_id) == "pending"
    delivery = next(d for d in deliveries(app) if d.id == spruce_id)
    conversation_id = delivery.steps["spruce.conversation"]
    # A day later, the note is in the conversation (posted by an attempt whose answer was lost)
    # and Spruce no longer remembers the key.
    from schemas.spruce import note_message_body
    from workers.clients import spruce_client

    with app.app_context():
        from schemas.sparkloop import validate_event

        # Built from the stored payload, as the earlier attempt did (JSONB may reorder keys).
        _, data, _ = validate_event(events(app)[0].payload)
        spruce_client(app.config["RELAY"]).post_message(
            conversation_id, note_message_body("reward_redeemed", data), idempotency_key="other-key")
    with app.extensions["relay.db"].session() as session:
        stored = session.get(Delivery, spruce_id)
        stored.steps = stored.steps | {"spruce.note.first_attempt_ms": stored.steps["spruce.note.first_attempt_ms"] - 25 * 3600 * 1000}
        session.commit()

    run_pending(app)
    assert next(d for d in deliveries(app) if d.id == spruce_id).steps["spruce.note"] == "found-in-conversation"
    assert len(sandbox_state(sandbox)["spruce"]["items"][conversation_id]) == 1


def test_a_paced_multi_step_delivery_moves_forward_with_every_call_it_spends(environ, sandbox):
    # One call per slot: each run makes one call and is deferred before the next. A read that
    # found nothing must count as progress, or the delivery would search again on every run.
    from web import create_app

    app = create_app({**environ, "SPRUCE_RATE_LIMIT": "10/1s"})
    app.extensions["relay.db"].upgrade()
    post_event(app.test_client(), load_fixture("reward_unlocked"))
    run_pending(app, rounds=12, honour_waits=True)

    spruce = next(d for d in deliveries(app) if d.destination == "spruce")
    assert spruce.status == "succeeded" and spruce.attempts == 1
    calls = [(r["method"], r["path"].split("/")[-1]) for r in sandbox_state(sandbox)["requests"]
             if r["vendor"] == "spruce"]
    assert sorted(calls) == [("GET", "conversations"), ("POST", "contacts"), ("POST", "conversations"),
                             ("POST", "messages"), ("POST", "search")]
