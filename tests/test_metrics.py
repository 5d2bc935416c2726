"""GET /metrics: one scrape target for the whole deployment, its counters agreeing with the
store, behind METRICS_TOKEN."""
from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from operations import destinations
from operations.audit import Actor
from relay.models import Lane
from relay.runtime import Runtime
from schemas.events import EVENTS
from testbed.apps import deliveries, events, post_event, run_pending
from testbed.examples import FIXTURE_NAMES, load_fixture
from testbed.reserves import DAILY_LIMIT, RESERVES, park_spruce

TOKEN = "metrics-token-123"


def scrape(client, token: str | None = TOKEN) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def test_the_counters_match_what_the_store_holds(relay_app, sandbox):
    app = relay_app(METRICS_TOKEN=TOKEN)
    client = app.test_client()
    sandbox.configure(faults=[{"vendor": "spruce", "status": 400, "times": 1, "method": "POST",
                               "path": "/contacts"}])  # one delivery fails
    for name in FIXTURE_NAMES:
        post_event(client, load_fixture(name))
    post_event(client, {"type": "no_such_type"})
    post_event(client, load_fixture("new_referral"), token="wrong")
    run_pending(app)
    samples = scrape(client)

    stored = [d for d in deliveries(app)]
    for outcome in ("succeeded", "failed"):
        for destination in ("sprig", "spruce"):
            expected = sum(1 for d in stored if d.status == outcome and d.destination == destination)
            assert value(samples, "relay_deliveries_total", destination=destination, outcome=outcome) == expected
    assert sum(1 for d in stored if d.status == "failed") == 1
    received = len([e for e in events(app) if e.status != "unhandled"])
    accepted = sum(value(samples, "relay_webhooks_total", type=t, outcome="accepted") for t in EVENTS)
    duplicates = sum(value(samples, "relay_webhooks_total", type=t, outcome="duplicate") for t in EVENTS)
    assert (accepted, duplicates) == (received, 0)  # every example is an event of its own
    assert value(samples, "relay_webhooks_total", type="unknown", outcome="unhandled") == 1
    assert value(samples, "relay_webhooks_total", type="unknown", outcome="unauthorized") == 1
    calls = sum(v for (name, labels), v in samples.items() if name == "relay_vendor_requests_total")
    assert calls == len([r for r in sandbox.snapshot()["requests"] if r["vendor"] in ("sprig", "spruce")])
    assert value(samples, "relay_vendor_requests_total", vendor="spruce", status="400") == 1
    finished = sum(1 for d in stored if d.finished_at)
    assert sum(value(samples, "relay_delivery_latency_seconds_count", destination=d) for d in ("sprig", "spruce")) == finished
    assert value(samples, "relay_pending_deliveries") == 0 and value(samples, "relay_oldest_pending_seconds") == 0


def test_the_backlog_and_the_breaker_are_gauges(relay_app, sandbox):
    app = relay_app(SPRIG_API_KEY="revoked", SPRUCE_API_TOKEN="")
    client = app.test_client()
    post_event(client, load_fixture("reward_unlocked"))
    run_pending(app, rounds=1)  # the key is refused: the breaker opens, the delivery waits
    samples = scrape(client, token=None)  # no METRICS_TOKEN: open
    assert value(samples, "relay_breaker_open", vendor="sprig") == 1
    assert value(samples, "relay_pending_deliveries") == 1
    assert value(samples, "relay_oldest_pending_seconds") > 0
    assert value(samples, "relay_deliveries_total", destination="sprig", outcome="deferred") == 1


def test_parked_and_held_deliveries_and_the_daily_reading_are_gauges(relay_app, sandbox):
    app = relay_app(**RESERVES)
    park_spruce(app, sandbox)
    client, runtime = app.test_client(), Runtime.of(app)
    samples = scrape(client, token=None)
    parked = {(d, lane): value(samples, "relay_parked_deliveries", destination=d, lane=lane)
              for d in ("sprig", "spruce") for lane in ("live", "retry", "catch-up")}
    assert parked == {("sprig", "live"): 0, ("sprig", "retry"): 0, ("sprig", "catch-up"): 0,
                      ("spruce", "live"): 2, ("spruce", "retry"): 1, ("spruce", "catch-up"): 1}
    assert ("relay_parked_deliveries", (("destination", "sprig"), ("lane", "live"))) in samples  # zero, not absent
    assert value(samples, "relay_held_deliveries", destination="spruce", lane="live") == 0
    [reading] = [key for key in runtime.redis.scan_iter("relay:reserve:spruce:*") if key.count(b":") == 3]
    remaining = int(runtime.redis.hget(reading, "remaining"))
    assert 0 <= remaining <= 4  # the live reserve: 20% of 20
    assert value(samples, "relay_vendor_daily_remaining", vendor="spruce") == remaining
    assert value(samples, "relay_vendor_daily_limit", vendor="spruce") == DAILY_LIMIT
    assert not [key for key in samples if key[0].startswith("relay_vendor_daily") and key[1] != (("vendor", "spruce"),)]

    destinations.hold(runtime, "spruce", reason=None, actor=Actor("lead@clinic.example", "cli"))
    held = scrape(client, token=None)
    waiting = Counter(d.lane if d.lane == Lane.CATCH_UP else "retry" if d.attempts > d.deferrals else "live"
                      for d in deliveries(app) if d.destination == "spruce" and d.status == "pending")
    assert (waiting[Lane.CATCH_UP], waiting["retry"]) == (1, 1) and waiting["live"] >= 2  # the parked, the unrun
    assert [value(held, "relay_held_deliveries", destination="spruce", lane=lane)
            for lane in ("live", "retry", "catch-up")] == [waiting["live"], 1, 1]
    assert value(held, "relay_held_deliveries", destination="sprig", lane="live") == 0


def test_a_scrape_without_the_token_is_401_and_with_another_403(bare_app):
    client = bare_app(METRICS_TOKEN=TOKEN).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_forked_child_rebuilds_what_it_must_not_share(app, client):
    # relay.runtime's one place: after a fork (a Celery pool process) the child adds only its own
    # counts, claims none of its parent's running deliveries, warns for itself and opens pools of its own.
    runtime = Runtime.of(app)
    runtime.metrics.count("relay_webhooks_total", type="unknown", outcome="parent")  # not flushed yet
    runtime.running.add("a claim of the parent's")
    runtime.warned_keys.add("a key id the parent warned about")
    parent_pool = runtime.db.engine.pool
    pid = os.fork()
    if pid == 0:  # the child: report through its exit code, never return into pytest
        fine = False
        try:
            fine = not runtime.running and not runtime.warned_keys and runtime.db.engine.pool is not parent_pool
            runtime.metrics.count("relay_webhooks_total", type="unknown", outcome="child")
            runtime.metrics.flush()
        finally:
            os._exit(0 if fine else 1)
    deadline = time.monotonic() + 30
    while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if ended[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not end within 30 s")
    assert os.waitstatus_to_exitcode(ended[1]) == 0
    samples = scrape(client)
    assert value(samples, "relay_webhooks_total", type="unknown", outcome="parent") == 1  # counted once, not twice
    assert value(samples, "relay_webhooks_total", type="unknown", outcome="child") == 1
    assert runtime.running == {"a claim of the parent's"}
