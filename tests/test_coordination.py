"""The shared throttle, breaker and subscriber locks, on the real Redis."""
from __future__ import annotations

import time

import pytest
import redis

from web.config import RateLimit
from workers.coordination import (
    JITTER_MARGIN_MS, Breaker, Deferred, Throttle, replaying, reserved_slot, subject_locks,
)


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def using(slot):
    """Run as the delivery that reserved `slot` (what the engine does on its next run)."""
    return reserved_slot.set(slot)


def test_each_deferred_caller_gets_its_own_slot_and_may_use_it_when_due(r):
    throttle = Throttle(r, "sprig:acct", RateLimit(5, 1.0))  # one call every 200 ms
    throttle.acquire()
    waits, slots = [], []
    for _ in range(2):
        with pytest.raises(Deferred) as deferred:
            throttle.acquire()
        waits.append(deferred.value.wait_s)
        slots.append(deferred.value.slot)
    assert 0.15 < waits[0] <= 0.2 and 0.35 < waits[1] <= 0.4  # distinct slots, no stampede
    time.sleep(waits[0])
    token = using(slots[0])
    try:
        throttle.acquire()  # its reserved slot: no new reservation
    finally:
        reserved_slot.reset(token)
    with pytest.raises(Deferred) as early:  # the second slot is not due yet
        token = using(slots[1])
        try:
            throttle.acquire()
        finally:
            reserved_slot.reset(token)
    assert early.value.slot == slots[1]


def test_throttle_is_shared_by_every_client_of_the_account(r):
    first = Throttle(r, "sprig:acct", RateLimit(5, 1.0))
    second = Throttle(redis.Redis(connection_pool=r.connection_pool), "sprig:acct", RateLimit(5, 1.0))
    other_account = Throttle(r, "sprig:other", RateLimit(5, 1.0))
    first.acquire()
    with pytest.raises(Deferred):
        second.acquire()
    other_account.acquire()


def test_throttle_holds_the_rate_over_a_second(r):
    throttle = Throttle(r, "sprig:acct", RateLimit(20, 1.0))
    granted, deadline, slot = 0, time.monotonic() + 1.0, None
    while time.monotonic() < deadline:
        token = using(slot)
        try:
            throttle.acquire()
            granted, slot = granted + 1, None
        except Deferred as deferred:
            slot = deferred.slot
            time.sleep(min(deferred.wait_s, max(deadline - time.monotonic(), 0)))
        finally:
            reserved_slot.reset(token)
    assert 19 <= granted <= 21


def test_a_slot_used_late_never_lets_a_window_hold_more_than_the_limit(r):
    throttle = Throttle(r, "sprig:acct", RateLimit(2, 1.0))  # one call every 500 ms
    throttle.acquire()
    with pytest.raises(Deferred) as first:
        throttle.acquire()
    time.sleep(0.9)  # the worker picks its slot (due at 500 ms) up late, at 900 ms
    token = using(first.value.slot)
    try:
        throttle.acquire()
    finally:
        reserved_slot.reset(token)
    with pytest.raises(Deferred) as second:
        throttle.acquire()  # GCRA's next slot is at 1000 ms: only 100 ms after the late call
    time.sleep(second.value.wait_s)
    token = using(second.value.slot)
    try:
        with pytest.raises(Deferred) as held:  # two calls in the last second (+ margin): wait
            throttle.acquire()
    finally:
        reserved_slot.reset(token)
    assert 0.05 < held.value.wait_s <= 0.1 + JITTER_MARGIN_MS / 1000
    time.sleep(held.value.wait_s)
    token = using(held.value.slot)
    try:
        throttle.acquire()
    finally:
        reserved_slot.reset(token)


def acquire_as(throttle, slot=None, replay=False):
    tokens = reserved_slot.set(slot), replaying.set(replay)
    try:
        throttle.acquire()
    finally:
        reserved_slot.reset(tokens[0])
        replaying.reset(tokens[1])


def test_replays_take_only_the_slots_live_traffic_leaves(r):
    throttle = Throttle(r, "sprig:acct", RateLimit(10, 1.0))  # one call every 100 ms
    acquire_as(throttle, replay=True)  # nothing live is waiting: the replay goes
    with pytest.raises(Deferred) as live:
        acquire_as(throttle)
    with pytest.raises(Deferred) as replay:
        acquire_as(throttle, replay=True)  # queues in the replays' own lane
    time.sleep(max(live.value.wait_s, replay.value.wait_s))
    with pytest.raises(Deferred) as yielded:  # its turn, but the live delivery holds the slot
        acquire_as(throttle, slot=replay.value.slot, replay=True)
    assert yielded.value.slot is None and "live traffic first" in yielded.value.reason
    acquire_as(throttle, slot=live.value.slot)
    with pytest.raises(Deferred) as next_live:
        acquire_as(throttle)
    assert next_live.value.wait_s <= 0.1  # the waiting replay reserved nothing ahead of it


def test_a_vendor_pause_holds_every_worker_and_every_reserved_slot(r):
    throttle = Throttle(r, "spruce:acct", RateLimit(10, 1.0))
    throttle.acquire()
    with pytest.raises(Deferred) as reserved:
        throttle.acquire()
    throttle.push(2.0)
    with pytest.raises(Deferred) as deferred:
        throttle.acquire()
    assert 1.9 < deferred.value.wait_s <= 2.0
    token = using(reserved.value.slot)
    try:
        with pytest.raises(Deferred) as held:
            throttle.acquire()
    finally:
        reserved_slot.reset(token)
    assert held.value.wait_s > 1.9


def test_low_remaining_from_the_vendor_slows_the_pace(r):
    throttle = Throttle(r, "spruce:acct", RateLimit(50, 60.0))  # our pace: one per 1.2 s
    throttle.observe(limit=100, remaining=90)  # 90 left: spreading them is faster than our pace
    throttle.acquire()
    r.flushdb()
    throttle.observe(limit=100, remaining=5)  # 5 left: spread them over a window
    with pytest.raises(Deferred) as deferred:
        throttle.acquire()
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
    messages = [r.getMessage() for r in caplog.records if r.name == "relay.coordination"]
    assert len([m for m in messages if "circuit opened" in m]) == 1
    assert len([m for m in messages if "circuit closed" in m]) == 1


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
