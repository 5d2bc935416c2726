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
from workers.throttle import JITTER_MARGIN_MS, Grant, Pacing, Slot, Throttle


def acquire(throttle, slot=None, lane=Lane.LIVE) -> Grant:
    """One call, as the run of a delivery that reserved `slot` on its previous run."""
    return throttle.acquire(Pacing(lane=lane, reserved=slot))


def deferred_call(throttle, slot=None, lane=Lane.LIVE) -> Deferred:
    with pytest.raises(Deferred) as deferred:
        acquire(throttle, slot, lane)
    return deferred.value


def most_within(grants_ms: list[int], span_ms: int) -> int:
    grants = sorted(grants_ms)
    return max((sum(1 for t in grants if start <= t < start + span_ms) for start in grants), default=0)


def test_calls_within_the_window_go_at_once_and_each_waiter_gets_its_own_slot(r):
    throttle = Throttle(r, "sprig:acct", CallRate(5, 1.0))  # 5 a second: one every 200 ms when queued
    burst_began = time.monotonic()
    for _ in range(5):
        acquire(throttle)  # a burst the window holds: nobody waits
    first, second = deferred_call(throttle), deferred_call(throttle)
    # When the window frees: a second after the burst's first call, less what a loaded machine
    # took since (measured, so the bound stays 50 ms wide).
    margin_s = 1.0 + JITTER_MARGIN_MS / 1000
    since_burst_s = time.monotonic() - burst_began
    assert margin_s - since_burst_s - 0.05 < first.wait_s <= margin_s
    assert 0.15 < second.wait_s - first.wait_s <= 0.2  # distinct slots, no stampede
    time.sleep(first.wait_s)
    acquire(throttle, first.slot)  # its reserved slot: no new reservation
    early = deferred_call(throttle, second.slot)  # the second slot is not due yet
    assert early.slot.at_ms == second.slot.at_ms
    newcomer = deferred_call(throttle)  # queues behind the waiter, though the window has room later
    assert newcomer.slot.at_ms > second.slot.at_ms


def test_a_reserved_slot_is_used_by_the_first_call_for_its_account_only():
    slot = Slot("sprig:acct", 123)
    pacing = Pacing(reserved=slot)
    assert pacing.take_reserved("spruce:other") is None
    assert pacing.take_reserved("sprig:acct") == slot
    assert pacing.take_reserved("sprig:acct") is None


def test_throttle_is_shared_by_every_client_of_the_account(r):
    first = Throttle(r, "sprig:acct", CallRate(1, 1.0))
    second = Throttle(redis.Redis(connection_pool=r.connection_pool), "sprig:acct", CallRate(1, 1.0))
    other_account = Throttle(r, "sprig:other", CallRate(1, 1.0))
    acquire(first)
    deferred_call(second)
    acquire(other_account)


def test_no_window_holds_more_than_the_limit_however_late_slots_are_used(r):
    throttle = Throttle(r, "sprig:acct", CallRate(4, 0.5))
    grants, slots, deadline = [], [None] * 6, time.monotonic() + 2.0
    while time.monotonic() < deadline:  # six callers, each using its slot up to 150 ms late
        for n, slot in enumerate(slots):
            try:
                grants.append(acquire(throttle, slot).at_ms)
                slots[n] = None
            except Deferred as deferred:
                slots[n] = deferred.slot
        time.sleep(0.01 + 0.14 * (len(grants) % 3 == 0))
    assert most_within(grants, 500) <= 4
    # And the windows are used: up to 4 per 0.5 s; a loaded machine runs the callers' loop late,
    # so half is the bound (the upper one above is the guarantee).
    assert len(grants) >= 4 * 4 // 2


def test_replays_take_only_what_live_traffic_leaves(r):
    throttle = Throttle(r, "sprig:acct", CallRate(2, 1.0))  # replays: one every 500 ms
    acquire(throttle, lane=Lane.CATCH_UP)  # nothing live is waiting: the replay goes
    acquire(throttle)  # live traffic goes at once while the window has room
    live = deferred_call(throttle)  # the window is full: live queues
    replay = deferred_call(throttle, lane=Lane.CATCH_UP)  # at its lane's pace
    assert replay.wait_s <= 0.5
    time.sleep(replay.wait_s)
    yielded = deferred_call(throttle, replay.slot, lane=Lane.CATCH_UP)  # its turn, but live waits
    assert yielded.slot is None and "live traffic first" in yielded.reason
    time.sleep(live.wait_s)
    acquire(throttle, live.slot)


def test_a_vendor_pause_holds_every_worker_and_every_reserved_slot(r):
    throttle = Throttle(r, "spruce:acct", CallRate(1, 1.0))
    acquire(throttle)
    reserved = deferred_call(throttle)
    throttle.push(2.0)
    pushed_at = time.monotonic()  # the bounds below allow 0.1 s, less the time a loaded machine took since
    behind_the_waiter = deferred_call(throttle).wait_s
    assert 1.9 - (time.monotonic() - pushed_at) < behind_the_waiter <= 2.0 + 1.0 + JITTER_MARGIN_MS / 1000
    assert deferred_call(throttle, reserved.slot).wait_s > 1.9 - (time.monotonic() - pushed_at)


def test_what_the_vendor_says_remains_binds_every_worker_until_its_window_passes(r):
    # The guess is ten times too high; the vendor's window is 1 s here (Spruce's is 60 s).
    throttle = Throttle(r, "spruce:acct", CallRate(300, 60.0), vendor_window_s=1.0)
    granted = acquire(throttle)
    throttle.finished(granted, limit=30, remaining=2)  # the answer to that call: 2 left
    read_at = time.monotonic()
    acquire(throttle)  # one more: with the call it answered, 2 spent since the reading
    held = deferred_call(throttle)
    # Until the vendor's window has surely passed: 1 s from the reading, less the time a loaded
    # machine took since.
    assert 0.9 - (time.monotonic() - read_at) < held.wait_s <= 1.0
    throttle.finished(Grant(granted.at_ms - 5, 'older'), remaining=20)  # an older reading, answered late: ignored
    assert deferred_call(throttle).wait_s > 0.9 - (time.monotonic() - read_at)
    time.sleep(held.wait_s + 0.02)
    probe = acquire(throttle, held.slot)  # the window has passed: the waiter goes
    throttle.finished(probe, limit=30, remaining=29)
    # A fresh reading with room: a newcomer waits only for the queue (the second waiter, then
    # one interval), not for the vendor.
    assert deferred_call(throttle).wait_s <= 0.4


def test_a_window_that_turned_over_is_known_to_end_a_window_after_its_first_call(r):
    throttle = Throttle(r, "spruce:acct", CallRate(300, 60.0), vendor_window_s=1.0)
    first = acquire(throttle)
    throttle.finished(first, limit=4, remaining=3)  # the first call of the vendor's window
    time.sleep(2.5)  # longer than a call can be in flight (IN_FLIGHT_MS)
    slept_at = time.monotonic()
    last = acquire(throttle)
    throttle.finished(last, limit=4, remaining=0)
    held = deferred_call(throttle)
    # A fixed window ends 1 s after its start, at the latest 1 s after the first call seen in
    # it, plus the time a call can spend in flight (2 s); not 1 s after the last reading.
    assert 0.3 - (time.monotonic() - slept_at) < held.wait_s <= 0.5


def test_the_vendors_own_limit_binds_when_the_guess_is_higher(r):
    throttle = Throttle(r, "spruce:acct", CallRate(300, 60.0))
    throttle.finished(acquire(throttle), limit=3)
    acquire(throttle), acquire(throttle)
    assert deferred_call(throttle).wait_s > 59  # 3 calls in its window: the fourth waits


def test_a_guess_lower_than_the_vendor_allows_is_used_in_full(r):
    throttle = Throttle(r, "spruce:acct", CallRate(5, 1.0))
    for _ in range(5):
        throttle.finished(acquire(throttle), limit=100, remaining=90)
    assert deferred_call(throttle).wait_s <= 1.0 + JITTER_MARGIN_MS / 1000  # our own window, nothing more


def test_a_call_counts_in_the_window_until_it_ended(r):
    throttle = Throttle(r, "sprig:acct", CallRate(1, 1.0), margin_ms=0)
    slow = acquire(throttle)
    time.sleep(0.6)  # the vendor took 0.6 s to answer: it may have counted the call at its end
    throttle.finished(slow)
    assert 1.5 < deferred_call(throttle).wait_s + 0.6 <= 1.65  # a window after the end, not the grant


def test_a_short_wait_is_slept_through_and_a_long_one_defers(r):
    naps = []
    throttle = Throttle(r, "sprig:acct", CallRate(1, 0.3))
    guard = Guard(throttle, Breaker(r, "sprig:acct"), sleep=lambda s: (naps.append(s), time.sleep(s)))
    guard.before(Pacing())
    guard.before(Pacing())  # the window frees in 0.4 s: the caller naps, keeping its place
    assert len(naps) == 1 and 0.3 < naps[0] <= 0.4
    throttle.push(5.0)
    with pytest.raises(Deferred):
        guard.before(Pacing())
    assert len(naps) == 1


def test_breaker_opens_after_a_run_of_failures_probes_once_and_closes(r, caplog):
    # A cooldown long enough that a loaded machine reads "open" before it ends.
    breaker = Breaker(r, "sprig:acct", threshold=3, cooldown_s=2.0)
    for _ in range(2):
        breaker.failure()
    breaker.check()  # still closed
    breaker.failure()
    assert breaker.state() == "open"
    with pytest.raises(Deferred):
        breaker.check()
    time.sleep(2.05)
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
    guard = Guard(throttle, breaker, nap_within_s=0)
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
