"""The web only stores; each worker's dispatcher publishes what was stored, once, on its lane's
queue, and several dispatchers never take the same rows."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

import workers.dispatch
from relay.models import Delivery, Lane, utcnow
from relay.queue import LIVE_QUEUE, publish
from relay.runtime import Runtime
from testbed.apps import deliveries, dispatch_stored, events, post_event
from testbed.examples import load_fixture
from testbed.net import free_port
from testbed.waiting import wait_for


def test_the_web_stores_and_the_dispatcher_publishes_each_delivery_once(app, client, monkeypatch):
    sent = []
    monkeypatch.setattr(app.extensions["celery"], "send_task", lambda name, args, queue, **_: sent.append((args[0], queue)))
    assert post_event(client, load_fixture("new_referral")).status_code == 200
    assert [d.enqueued_at for d in deliveries(app)] == [None, None]  # stored, not yet published
    assert dispatch_stored(app) == 2
    assert sorted(sent) == [(d.id, "celery") for d in deliveries(app)]
    assert all(d.enqueued_at is not None for d in deliveries(app))
    assert dispatch_stored(app) == 0  # published once


def test_catch_up_work_goes_to_its_own_queue(app, client, monkeypatch):
    sent = []
    monkeypatch.setattr(app.extensions["celery"], "send_task", lambda name, args, queue, **_: sent.append(queue))
    post_event(client, load_fixture("new_referral"))
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).values(lane=Lane.CATCH_UP))
        session.commit()
    assert dispatch_stored(app) == 2 and sent == ["relay-replay", "relay-replay"]


def test_a_row_another_dispatcher_holds_is_skipped_on_postgresql(app, client, database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("one writer at a time: a second dispatcher waits for the first instead")
    post_event(client, load_fixture("new_referral"))
    db = Runtime.of(app).db
    with db.session() as holder:
        holder.execute(sa.select(Delivery.id).where(Delivery.destination == "sprig").with_for_update())
        assert dispatch_stored(app) == 1  # the other one, without waiting for the lock
    assert dispatch_stored(app) == 1


def test_a_worker_delivers_what_the_web_stored_with_nothing_else_running(client, app, worker):
    post_event(client, load_fixture("new_referral"))
    assert wait_for(lambda: [e.status for e in events(app)] == ["done"], timeout=20)


def test_what_the_broker_refuses_stays_for_the_next_round(app, client, monkeypatch):
    post_event(client, load_fixture("new_referral"))
    celery_app = app.extensions["celery"]

    def broker_down(*_args, **_kwargs):
        raise ConnectionError("broker away")

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    assert dispatch_stored(app) == 0
    assert [d.enqueued_at for d in deliveries(app)] == [None, None]
    monkeypatch.setattr(celery_app, "send_task", lambda *_args, **_kwargs: None)
    assert dispatch_stored(app) == 2


def test_a_backlog_stays_in_the_store_and_no_destination_waits_behind_another(app, client, monkeypatch):
    sent = []
    monkeypatch.setattr(app.extensions["celery"], "send_task", lambda name, args, queue, **_: sent.append(args[0]))
    monkeypatch.setattr(workers.dispatch, "MAX_OUT_PER_DESTINATION_LANE", 2)
    for referrals in range(1, 5):
        payload = load_fixture("reward_unlocked")
        payload["referrals"] = payload["subscriber"]["tot_referrals"] = referrals
        post_event(client, payload)
    by_destination = {name: [d.id for d in deliveries(app) if d.destination == name] for name in ("sprig", "spruce")}
    assert len(by_destination["sprig"]) == len(by_destination["spruce"]) == 4

    assert dispatch_stored(app) == 4  # two of each destination: the rest stays stored
    assert sorted(sent) == sorted(by_destination["sprig"][:2] + by_destination["spruce"][:2])
    assert dispatch_stored(app) == 0

    first_sprig, second_sprig = by_destination["sprig"][:2]
    with Runtime.of(app).db.session() as session:
        # One finished; one deferred to a throttle slot that is due: it is out, and goes first.
        session.execute(sa.update(Delivery).where(Delivery.id == first_sprig).values(status="succeeded"))
        session.execute(sa.update(Delivery).where(Delivery.id == second_sprig).values(
            enqueued_at=None, throttle_slot={"at_ms": 1, "member": "m"}, next_attempt_at=utcnow()))
        session.commit()
    sent.clear()
    assert dispatch_stored(app) == 2
    assert sorted(sent) == sorted([second_sprig, by_destination["sprig"][2]])


def test_a_round_s_deliveries_reach_the_broker_as_one_batch_and_a_broker_away_refuses_them_all(app, r, relay_app):
    celery_app = app.extensions["celery"]
    with celery_app.connection_for_write() as connection:
        assert publish(celery_app, [11, 12, 13], connection=connection) == [11, 12, 13]
    assert r.llen(LIVE_QUEUE) == 3  # each a deliver message on the live queue
    assert sorted(json.loads(message)["headers"]["argsrepr"] for message in r.lrange(LIVE_QUEUE, 0, -1)) == [
        "[11]", "[12]", "[13]"]

    away = relay_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").extensions["celery"]
    with away.connection_for_write() as connection:
        assert publish(away, [14, 15], connection=connection) == []  # a failed round: both stay for the next
    assert publish(away, [16]) == []  # and through the app's own producer pool
