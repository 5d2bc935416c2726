"""Spruce's s-ratelimit-* headers are the truth: with SPRUCE_RATE_LIMIT ten times what Spruce
allows, no worker spends more than the headers say remains. bench/delivery.py spruce-headers
runs it at Spruce's 60 s window; here the window is 3 s on both sides."""
from __future__ import annotations

import json

import pytest

from celery.contrib.testing.worker import start_worker

from testbed.apps import events, post_event, sandbox_state
from testbed.examples import load_fixture
from testbed.waiting import wait_for
from workers import throttle


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # about the vendor, not the store
def test_a_limit_guessed_ten_times_too_high_meets_no_429(relay_app, sandbox, monkeypatch):
    monkeypatch.setattr(throttle, "VENDOR_WINDOW_S", 3.0)
    sandbox.configure(rate_limit={"spruce": {"limit": 6, "window_s": 3}})
    app = relay_app(SPRUCE_RATE_LIMIT="60/3s", SPRIG_API_KEY="")
    client = app.test_client()
    for n in range(6):  # two Spruce calls each (search, create): two windows' worth
        payload = json.loads(json.dumps(load_fixture("new_referral")))
        payload["subscriber"].update(id=f"sub_limit_{n}", email=f"limit{n}@example.com")
        payload["referrer"].update(id=f"sub_referrer_{n}", email=f"referrer{n}@example.com")
        assert post_event(client, payload).status_code == 200
    with start_worker(app.extensions["celery"], pool="threads", concurrency=4, perform_ping_check=False,
                      shutdown_timeout=10, loglevel="WARNING"):
        assert wait_for(lambda: {e.status for e in events(app)} == {"done"}, timeout=60)
    calls = [r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "spruce"]
    assert [r["status"] for r in calls if r["status"] == 429] == []
    assert len(calls) >= 12
    assert calls[-1]["at"] - calls[0]["at"] >= 3.0  # the calls did wait for the vendor's window
