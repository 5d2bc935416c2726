"""A worker stopped by the platform (SIGTERM, as a deploy does) while a delivery is under way:
the delivery goes back to pending at once, without a retry spent, instead of waiting for its
lease. A file of its own, so the suite runs it beside the rolling-restart drill; a redis-server of
its own too, as every Redis db the suite may use on the test server is taken."""
from __future__ import annotations

import time

from relay.models import DeliveryStatus
from testbed.apps import deliveries
from testbed.drills.traffic import post_all, reward_event
from testbed.drills.verdicts import in_flight
from testbed.waiting import wait_for


def test_a_worker_stopped_mid_delivery_hands_it_back_at_once(drill_for, sandbox, redis_server):
    """SIGTERM to `relay worker` as the Procfile runs it: tasks under way get
    RELAY_SHUTDOWN_GRACE to finish, then the delivery still running goes back to pending there
    and then, not a lease later."""
    drill = drill_for("relay_drill_handback", redis_server.url)
    sandbox.configure(latency_ms={"spruce": 8000})
    app = drill.app(RELAY_SHUTDOWN_GRACE="2s")
    worker = drill.start_worker("worker", supervised=True, as_procfile=True, loglevel="INFO")
    post_all(app, [reward_event("reward_redeemed", 0)])
    spruce = next(d for d in deliveries(app) if d.destination == "spruce")
    assert wait_for(lambda: spruce.id in in_flight(app), timeout=60), drill.logs()  # a loaded CI machine starts slowly
    time.sleep(1.0)  # inside the slow vendor call
    stopped = time.monotonic()
    worker.terminate()
    worker.wait(timeout=20)
    stopped_s = time.monotonic() - stopped
    [handed_back] = [d for d in deliveries(app) if d.id == spruce.id]
    assert handed_back.status == DeliveryStatus.PENDING and handed_back.lease_expires_at is None, drill.logs()
    assert handed_back.attempts - handed_back.deferrals == 0  # a deferral: no retry spent
    assert stopped_s < 10, stopped_s
