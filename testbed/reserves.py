"""Deliveries a reserve parked (workers.reserves), made by the real path: the sandbox's Spruce day
runs down to the reserves, and the engine parks one delivery or more of each lane."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from relay.models import Delivery, Lane
from relay.runtime import Runtime
from testbed.apps import deliver, deliveries, make_due, post_event
from testbed.drills.traffic import referral_event

# A day of 20 Spruce calls; live and retry keep 4 (20%), catch-up 5 (25%, the default).
DAILY_LIMIT = 20
RESERVES = {"RELAY_RESERVE_LIVE": "20%", "RELAY_RESERVE_RETRY": "20%"}
LIVE_PARKED = "parked: Spruce's daily remaining at its live reserve (20%)"
RETRY_PARKED = "parked: Spruce's daily remaining at its retry reserve (20%)"
CATCH_UP_PARKED = "parked: Spruce's daily remaining at its catch-up reserve (25%)"
EVENTS = 14


@dataclass(frozen=True)
class ParkedSpruce:
    """The ids of the Spruce deliveries parked, by reserve lane."""

    live: list[int]
    retry: int
    catch_up: int


def park_spruce(app, sandbox) -> ParkedSpruce:
    """`app` built with RESERVES. One Spruce delivery fails once (a 500: a later attempt is the
    retry lane), one is made catch-up work; the others go live until the day is down to the live
    reserve, and two of them park; then the retry and the catch-up one park too."""
    sandbox.configure(rate_limit={"spruce": {"limit": 240, "daily_limit": DAILY_LIMIT, "day_s": 120}})
    client = app.test_client()
    for n in range(EVENTS):
        assert post_event(client, referral_event(n)).status_code == 200
    retry, catch_up, *live = [d.id for d in deliveries(app) if d.destination == "spruce"]
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).where(Delivery.id == catch_up).values(lane=Lane.CATCH_UP))
        session.commit()
    sandbox.configure(faults=[{"vendor": "spruce", "status": 500, "times": 1}])
    assert deliver(app, retry) == "retried"
    parked: list[int] = []
    for delivery_id in live:  # at most EVENTS - 2 runs
        if deliver(app, delivery_id) == "deferred":
            parked.append(delivery_id)
            if len(parked) == 2:
                break
    assert len(parked) == 2, "the day did not run down to the live reserve"
    make_due(app)
    assert (deliver(app, retry), deliver(app, catch_up)) == ("deferred", "deferred")
    return ParkedSpruce(parked, retry, catch_up)
