"""Drills: the delivery engine run by real Celery worker processes against the sandbox.

Unlike the in-process engine tests, these start `celery -A workers worker` as separate
processes, so whatever workers must agree on really goes through PostgreSQL and Redis:
- the vendor throttle, shared by three worker processes at once;
- recovery after a worker is killed (SIGKILL) in the middle of a Spruce call.

The web side is the Flask test client in this process; the drills are about the workers.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa

from relay.models import Delivery, DeliveryStatus, utcnow
from relay.runtime import Runtime
from testbed.apps import deliveries, run_sweep, sandbox_state
from testbed.drills.traffic import post_all, reward_event
from testbed.drills.verdicts import all_events_done, in_flight, vendor_requests
from testbed.waiting import wait_for

# A database and a Redis db of the drills' own (drill_for): the rest of the suite truncates and
# flushes its own, and its in-process workers would take the drills' tasks from a shared queue.
DRILL_DATABASE = "relay_drills"


@pytest.fixture
def drill(drill_for, redis_url):
    return drill_for(DRILL_DATABASE, redis_url.rsplit("/", 1)[0] + "/11")


def most_calls_within(times: list[float], span_s: float) -> int:
    """The most calls that any window [t, t + span_s) holds."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= span_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def let_the_leases_run_out(app, redis_url: str) -> None:
    """What the clock does for a dead worker within 20 s: its delivery lease and its subscriber
    locks run out (tests/test_drill_workers.py lets the clock do it)."""
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).where(Delivery.status == DeliveryStatus.IN_FLIGHT)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match="relay:lock:*"):
        client.delete(key)
    client.close()


def test_the_shared_limiter_holds_across_worker_processes(drill, sandbox):
    limit, window_s = 30, 3
    sandbox.configure(rate_limit={"sprig": {"limit": limit, "window_s": window_s}})
    app = drill.app(SPRIG_RATE_LIMIT=f"{limit}/{window_s}s", SPRUCE_API_TOKEN="")
    # One Sprig call per reward event, three windows' worth. Queued before any worker starts,
    # so the workers reserve the slots much faster than they fall due: the pace is the limiter's.
    post_all(app, [reward_event("reward_unlocked", n) for n in range(3 * limit)])
    for n in range(3):
        drill.start_worker(f"drill{n}")

    assert wait_for(lambda: all_events_done(app), timeout=60, interval=0.5), drill.logs()

    assert {d.status for d in deliveries(app)} == {"succeeded"}
    calls = vendor_requests(sandbox, "sprig")
    statuses = [c["status"] for c in calls]
    assert statuses.count(429) == 0, statuses
    # One upsert per event. A call that timed out on a loaded machine (one CI run) is read back
    # (GET, 404: it never landed) before it is sent again: a call through the same limiter.
    assert [c["status"] for c in calls if c["method"] == "POST"] == [202] * 3 * limit, statuses
    assert {c["method"] for c in calls} <= {"POST", "GET"}, statuses
    times = sorted(c["at"] for c in calls)
    rate = (len(times) - 1) / (times[-1] - times[0])
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    # The limiter grants one slot every window_s/limit, so the achieved rate can only exceed
    # limit/window_s by the jitter of the sandbox's timestamps (a few ms over a ~9 s run): 5%
    # is generous; per-process limiters would triple the rate. Below it, the run loses time to
    # worker start-up, slots used late and the limiter's margin, and on a loaded CI machine to
    # processes waiting for a core (one run here had a 4.6 s gap): half the limit still tells a
    # working limiter from one that serialises windows. How close it gets is bench/'s figure.
    assert 0.5 * limit / window_s <= rate <= 1.05 * limit / window_s, (rate, gaps)
    # The vendor may count in rolling windows: none may hold more than the limit. Exactly
    # window_s, no allowance: jitter between calls exactly one window apart is what a rolling
    # window would refuse too, so the limiter must leave the margin itself.
    assert most_calls_within(times, window_s) <= limit, gaps


def test_a_worker_killed_mid_delivery_loses_and_duplicates_nothing(drill, sandbox):
    subscribers = 6
    # Slow Spruce calls, so the kill lands while one is under way.
    sandbox.configure(latency_ms={"spruce": 300})
    app = drill.app()
    post_all(app, [reward_event("reward_redeemed", n) for n in range(subscribers)])

    doomed = drill.start_worker("doomed")
    # Search, create contact, list conversations answered: the note conversation's creation
    # is under way, and will land at Spruce with no one left to read the answer.
    assert wait_for(lambda: len(vendor_requests(sandbox, "spruce")) >= 3 and in_flight(app),
                    timeout=30, interval=0.05), drill.logs()
    drill.kill(doomed)
    victims = in_flight(app)
    assert victims, "the kill landed between two deliveries"

    # The dead worker's message stays unacknowledged in Redis for the broker's visibility
    # timeout (an hour): the sweep brings the delivery back, once its lease ran out.
    let_the_leases_run_out(app, drill.env["REDIS_URL"])
    assert run_sweep(app)["released"] == len(victims)
    drill.start_worker("successor")

    def swept_and_done() -> bool:
        run_sweep(app)  # beat is not running: the test is the sweep's clock
        return all_events_done(app)

    assert wait_for(swept_and_done, timeout=45, interval=1.0), drill.logs()
    assert {d.status for d in deliveries(app)} == {"succeeded"}
    spruce = sandbox_state(sandbox)["spruce"]
    emails = sorted(c["emailAddresses"][0]["value"] for c in spruce["contacts"])
    assert emails == sorted(f"drill{n}@example.com" for n in range(subscribers))
    assert len(spruce["conversations"]) == subscribers
    associated = sorted(c for conv in spruce["conversations"] for c in conv["associatedContactIds"])
    assert associated == sorted(c["id"] for c in spruce["contacts"])
    notes = {conv["id"]: [i for i in spruce["items"].get(conv["id"], []) if i["isInternalNote"]]
             for conv in spruce["conversations"]}
    assert all(len(items) == 1 for items in notes.values()), notes
