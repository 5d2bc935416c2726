"""The whole path on real parts: HTTP server -> database -> Redis -> Celery worker -> sandbox."""
from __future__ import annotations

import json
import time
from datetime import timedelta
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
import sqlalchemy as sa
from celery.contrib.testing.worker import start_worker

from relay.models import Delivery, utcnow
from relay.runtime import Runtime
from workers.sweep import BACKLOG
from testbed.apps import TOKEN, deliveries, dispatch_stored, events, post_event, run_sweep
from testbed.examples import load_fixture
from testbed.waiting import wait_for


def test_posted_events_reach_the_sandbox_through_a_real_worker(app, server, worker, sandbox):
    for name in ("new_referral", "reward_unlocked", "reward_redeemed"):
        response = httpx.post(f"{server}/webhooks/sparkloop", content=json.dumps(load_fixture(name)),
                              headers={"SparkLoop-Token": TOKEN}, timeout=10)
        assert (response.status_code, response.content) == (200, b"")

    assert wait_for(lambda: [e.status for e in events(app)] == ["done"] * 3), \
        [(e.type, e.status) for e in events(app)]
    state = httpx.get(f"{sandbox.url}/_sandbox/state", timeout=5).json()
    assert set(state["sprig"]["users"]) == {"john.doe@email.com", "john.smith@email.com"}
    assert len(state["spruce"]["contacts"]) == 1
    [conversation] = state["spruce"]["conversations"]
    assert len(state["spruce"]["items"][conversation["id"]]) == 2


def test_concurrent_duplicates_create_one_event(app, server):
    body = json.dumps(load_fixture("new_referral"))

    def post(_):
        return httpx.post(f"{server}/webhooks/sparkloop", content=body,
                          headers={"SparkLoop-Token": TOKEN}, timeout=20).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(16)))

    assert statuses == [200] * 16
    assert len(events(app)) == 1
    assert len(deliveries(app)) == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # about the broker, not the store
def test_broker_down_at_accept_then_the_workers_deliver(relay_app, sandbox):
    down = relay_app(REDIS_URL="redis://127.0.0.1:1/0")
    started = time.monotonic()
    response = post_event(down.test_client(), load_fixture("reward_unlocked"))
    assert response.status_code == 200
    assert time.monotonic() - started < 10
    assert all(d.enqueued_at is None and d.status == "pending" for d in deliveries(down)), [(d.status, d.enqueued_at) for d in deliveries(down)]

    up = relay_app()  # the broker is back
    with start_worker(up.extensions["celery"], pool="threads", concurrency=2,
                      perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
        # The worker's dispatcher publishes what was stored (the web never touched the broker).
        assert wait_for(lambda: events(up)[0].status == "done"), [(d.status, d.enqueued_at) for d in deliveries(up)]
    state = httpx.get(f"{sandbox.url}/_sandbox/state", timeout=5).json()
    assert "john.doe@email.com" in state["sprig"]["users"]


def test_a_delivery_waiting_in_a_backlog_is_not_sent_again(app, redis_url):
    post_event(app.test_client(), load_fixture("reward_unlocked"))
    long_ago = utcnow() - timedelta(minutes=5)
    with Runtime.of(app).db.session() as session:  # published long ago, still queued
        session.execute(sa.update(Delivery).values(enqueued_at=long_ago, next_attempt_at=long_ago))
        session.commit()
    broker = redis.Redis.from_url(redis_url)
    run_sweep(app)  # the first sweep of an empty Redis hands every pending delivery back
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).values(enqueued_at=long_ago))
        session.commit()
    broker.rpush("celery", *[b"{}"] * (BACKLOG + 1))  # a backlog: it is only waiting its turn
    assert run_sweep(app)["handed_back"] == 0
    broker.delete("celery")  # short queues: long enqueued and not run means lost
    assert run_sweep(app)["handed_back"] == 2
    assert all(d.enqueued_at is None for d in deliveries(app))  # the dispatcher's to publish again
    assert dispatch_stored(app) == 2


def test_sweep_releases_a_delivery_whose_worker_died(app):
    post_event(app.test_client(), load_fixture("reward_unlocked"))
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).values(status="in_flight", lease_expires_at=utcnow()))
        session.commit()
    assert run_sweep(app) == {"released": 2, "handed_back": 0, "broker_forgot": 1}
    assert all(d.status == "pending" and d.enqueued_at is None for d in deliveries(app))
    assert dispatch_stored(app) == 2
