"""What every process must agree on, on the real Redis: the shared throttle, the breaker and
the subscriber locks."""
from __future__ import annotations

import time

import pytest
import redis

from relay.config import CallRate
from relay.models import Lane
from workers.breaker import Breaker
from workers.guard import Guard
from workers.locks import subject_locks
from workers.outcomes import Deferred
from workers.throttle import JITTER_MARGIN_MS, Pacing, Slot, Throttle


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def acquire(throttle, slot=None, lane=Lane.LIVE):
    """One call, as the run of a delivery that reserved `slot` on its previous run."""
    throttle.acquire(Pacing(lane=lane, reserved=slot))


def test_each_deferred_caller_gets_its_own_slot_and_may_use_it_when_due(r):
    throttle = Throttle(r, "sprig:acct", CallRate(5, 1.0))  # one call every 200 ms
    acquire(throttle)
    waits, slots = [], []
    for _ in range(2):
        with pytest.raises(Deferred) as deferred:
            acquire(throttle)
        waits.append(deferred.value.wait_s)
        slots.append(deferred.value.slot)
    assert 0.15 < waits[0] <= 0.2 and 0.35 < waits[1] <= 0.4  # distinct slots, no stampede
    time.sleep(waits[0])
    acquire(throttle, slots[0])  # its reserved slot: no new reservation
    with pytest.raises(Deferred) as early:  # the second slot is not due yet
        acquire(throttle, slots[1])
    assert early.value.slot == slots[1]


def test_a_reserved_slot_is_used_by_the_first_call_for_its_account_only():
    slot = Slot("sprig:acct", 123)
    pacing = Pacing(reserved=slot)
    assert pacing.take_reserved("spruce:other") is None
    assert pacing.take_reserved("sprig:acct") == slot
    assert pacing.take_reserved("sprig:acct") is None


def test_throttle_is_shared_by_every_client_of_the_account(r):
    first = Throttle(r, "sprig:acct", CallRate(5, 1.0))
    second = Throttle(redis.Redis(connection_pool=r.connection_pool), "sprig:acct", CallRate(5, 1.0))
    other_account = Throttle(r, "sprig:other", CallRate(5, 1.0))
    acquire(first)
    with pytest.raises(Deferred):
        acquire(second)
    acquire(other_account)


def test_throttle_holds_the_rate_over_a_second(r):
    throttle = Throttle(r, "sprig:acct", CallRate(20, 1.0))
    granted, deadline, slot = 0, time.monotonic() + 1.0, None
    while time.monotonic() < deadline:
        try:
            acquire(throttle, slot)
            granted, slot = granted + 1, None
        except Deferred as deferred:
            slot = deferred.slot
            time.sleep(min(deferred.wait_s, max(deadline - time.monotonic(), 0)))
    assert 19 <= granted <= 21


def test_a_slot_used_late_never_lets_a_window_hold_more_than_the_limit(r):
    throttle = Throttle(r, "sprig:acct", CallRate(2, 1.0))  # one call every 500 ms
    acquire(throttle)
    with pytest.raises(Deferred) as first:
        acquire(throttle)
    time.sleep(0.9)  # the worker picks its slot (due at 500 ms) up late, at 900 ms
    acquire(throttle, first.value.slot)
    with pytest.raises(Deferred) as second:
        acquire(throttle)  # GCRA's next slot is at 1000 ms: only 100 ms after the late call
    time.sleep(second.value.wait_s)
    with pytest.raises(Deferred) as held:  # two calls in the last second (+ margin): wait
        acquire(throttle, second.value.slot)
    assert 0.05 < held.value.wait_s <= 0.1 + JITTER_MARGIN_MS / 1000
    time.sleep(held.value.wait_s)
    acquire(throttle, held.value.slot)


def test_replays_take_only_the_slots_live_traffic_leaves(r):
    throttle = Throttle(r, "sprig:acct", CallRate(10, 1.0))  # one call every 100 ms
    acquire(throttle, lane=Lane.CATCH_UP)  # nothing live is waiting: the replay goes
    with pytest.raises(Deferred) as live:
        acquire(throttle)
    with pytest.raises(Deferred) as replay:
        acquire(throttle, lane=Lane.CATCH_UP)  # queues in the replays' own lane
    time.sleep(max(live.value.wait_s, replay.value.wait_s))
    with pytest.raises(Deferred) as yielded:  # its turn, but the live delivery holds the slot
        acquire(throttle, replay.value.slot, lane=Lane.CATCH_UP)
    assert yielded.value.slot is None and "live traffic first" in yielded.value.reason
    acquire(throttle, live.value.slot)
    with pytest.raises(Deferred) as next_live:
        acquire(throttle)
    assert next_live.value.wait_s <= 0.1  # the waiting replay reserved nothing ahead of it


def test_a_vendor_pause_holds_every_worker_and_every_reserved_slot(r):
    throttle = Throttle(r, "spruce:acct", CallRate(10, 1.0))
    acquire(throttle)
    with pytest.raises(Deferred) as reserved:
        acquire(throttle)
    throttle.push(2.0)
    with pytest.raises(Deferred) as deferred:
        acquire(throttle)
    assert 1.9 < deferred.value.wait_s <= 2.0
    with pytest.raises(Deferred) as held:
        acquire(throttle, reserved.value.slot)
    assert held.value.wait_s > 1.9


def test_low_remaining_from_the_vendor_slows_the_pace(r):
    throttle = Throttle(r, "spruce:acct", CallRate(50, 60.0))  # our pace: one per 1.2 s
    throttle.observe(remaining=90)  # 90 left: spreading them is faster than our pace
    acquire(throttle)
    r.flushdb()
    throttle.observe(remaining=5)  # 5 left: spread them over a window
    with pytest.raises(Deferred) as deferred:
        acquire(throttle)
    assert 11 < deferred.value.wait_s <= 12


def test_breaker_opens_after_a_run_of_failures_probes_once_and_closes(r, caplog):
    breaker = Breaker(r, "sprig:acct", threshold=3, cooldown_s=0.3)
    for _ in range(2):
        breaker.failure()
    breaker.check()  # still closed
    breaker.failure()
    assert breaker.state() == "open"
    with pytest.raises(Deferred):
        breaker.check()
    time.sleep(0.35)
    assert breaker.state() == "half-open"
    breaker.check()  # the one probe
    with pytest.raises(Deferred, match="probe"):
        breaker.check()
    breaker.success()
    assert breaker.state() == "closed"
    breaker.check()
    messages = [r.getMessage() for r in caplog.records if r.name == "relay.breaker"]
    assert len([m for m in messages if "circuit opened" in m]) == 1
    assert len([m for m in messages if "circuit closed" in m]) == 1


def test_a_probe_the_throttle_defers_is_not_stranded(r):
    breaker = Breaker(r, "sprig:acct", threshold=1, cooldown_s=0.2)
    throttle = Throttle(r, "sprig:acct", CallRate(1, 0.5))  # one call every 500 ms
    guard = Guard(throttle, breaker)
    breaker.failure()
    time.sleep(0.25)
    assert breaker.state() == "half-open"
    acquire(throttle)  # the slot goes to someone else
    with pytest.raises(Deferred) as deferred:
        guard.before(Pacing())  # takes the probe, then waits for a throttle slot
    assert "throttled" in deferred.value.reason
    wait_s, slot = deferred.value.wait_s, deferred.value.slot
    for _ in range(3):  # the same caller probes at its slot (the window's margin may add a wait)
        time.sleep(wait_s)
        try:
            guard.before(Pacing(reserved=slot))
            break
        except Deferred as again:
            assert "probe is running" not in again.reason
            wait_s, slot = again.wait_s, again.slot
    else:
        pytest.fail("no throttle slot in three tries")
    guard.after(None)
    assert breaker.state() == "closed"  # no cool-down waited out


def test_a_rejected_credential_opens_the_breaker_at_once(r):
    breaker = Breaker(r, "spruce:acct", auth_cooldown_s=60)
    breaker.failure(auth=True)
    with pytest.raises(Deferred) as deferred:
        breaker.check()
    assert deferred.value.wait_s > 50


def test_subject_lock_admits_one_delivery_and_frees_on_exit(r):
    with subject_locks(r, "spruce", ["id:sub_1"]):
        with pytest.raises(Deferred):
            with subject_locks(r, "spruce", ["id:sub_1"]):
                pass
        with subject_locks(r, "sprig", ["id:sub_1"]):  # another vendor: independent
            pass
    with subject_locks(r, "spruce", ["id:sub_1"]):
        pass
