"""How long calls take through the shared throttle (workers.throttle.sending_time_s), which
`relay events replay --dry-run` says, against the throttle itself on real Redis: one caller that
sleeps each wait it is told, as a delivery's run does."""
from __future__ import annotations

import time

import pytest
import redis

from relay.config import CallRate
from relay.models import Lane
from workers.outcomes import Deferred
from workers.throttle import Pacing, Throttle, sending_time_s

MAX_WAITS = 200


def elapsed_for(throttle: Throttle, lane: Lane, calls: int) -> float:
    start = time.monotonic()
    for _ in range(calls):
        pacing = Pacing(lane=lane)
        for _ in range(MAX_WAITS):
            try:
                throttle.acquire(pacing)
                break
            except Deferred as deferred:
                pacing = Pacing(lane=lane, reserved=deferred.slot)
                time.sleep(deferred.wait_s)
        else:
            pytest.fail("the throttle never let a call through")
    return time.monotonic() - start


@pytest.mark.parametrize("lane", [Lane.LIVE, Lane.CATCH_UP])
@pytest.mark.parametrize("rate, calls", [(CallRate(5, 1), 4), (CallRate(3, 0.3), 7), (CallRate(2, 0.4), 5)])
def test_the_estimate_is_what_the_throttle_takes(redis_url, lane, rate, calls):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    throttle = Throttle(client, f"estimate-{lane}-{rate.limit}-{calls}", rate)

    estimate = throttle.sending_time_s(calls, lane)
    took = elapsed_for(throttle, lane, calls)

    # The throttle never sends faster than the estimate says. Sleeping overshoots on each wait,
    # more on a loaded machine: a quarter more, plus a constant, is still far from the old
    # estimate's error (seconds for calls that go at once).
    assert estimate - 0.02 <= took <= estimate * 1.25 + 0.15, (estimate, took)


def test_live_calls_burst_within_the_window_and_catch_up_is_paced():
    rate = CallRate(50, 60)
    assert sending_time_s(5, rate, Lane.LIVE) == 0.0  # five calls go at once
    assert sending_time_s(5, rate, Lane.CATCH_UP) == pytest.approx(4 * 1.2)
    assert sending_time_s(51, rate, Lane.LIVE) == pytest.approx(60.1)  # the 51st waits for the window
    assert sending_time_s(0, rate, Lane.CATCH_UP) == sending_time_s(1, rate, Lane.CATCH_UP) == 0.0
