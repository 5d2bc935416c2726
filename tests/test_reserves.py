"""Reserves against the sandbox's daily window (workers.reserves): catch-up parks at its reserve
while live still goes, live never spends into its own, a parked delivery spends no attempt and
goes again once the day has turned over (found by one probe), and the turnover is learned."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from relay.models import Delivery, DeliveryStatus, Lane
from relay.runtime import Runtime
from testbed.apps import deliver, deliveries, make_due, post_event, sandbox_state
from testbed.drills.traffic import referral_event

ONE_STORE = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # about the vendor, not the store
CATCH_UP_PARKED = "parked: Spruce's daily remaining at its catch-up reserve (25%)"


def spruce_deliveries(app, events: int) -> list[int]:
    client = app.test_client()
    for n in range(events):
        assert post_event(client, referral_event(n)).status_code == 200
    return [d.id for d in deliveries(app) if d.destination == "spruce"]


def make_catch_up(app, delivery_id: int) -> None:
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).where(Delivery.id == delivery_id).values(lane=Lane.CATCH_UP))
        session.commit()


def delivery(app, delivery_id: int) -> Delivery:
    [found] = [d for d in deliveries(app) if d.id == delivery_id]
    return found


def budget(sandbox) -> dict:
    return sandbox_state(sandbox)["budgets"]["spruce"]


@ONE_STORE
def test_catch_up_parks_at_its_reserve_while_live_still_goes(relay_app, sandbox):
    # A day of 16 calls: catch-up keeps 4 (25%), live 0.32 (2%). Each delivery makes two calls.
    sandbox.configure(rate_limit={"spruce": {"limit": 240, "daily_limit": 16, "day_s": 120}})
    app = relay_app()
    *live, replay, late = spruce_deliveries(app, 8)
    make_catch_up(app, replay)
    assert [deliver(app, d) for d in live] == ["succeeded"] * 6  # 12 calls: 4 remain, the catch-up reserve

    assert deliver(app, replay) == "deferred"
    parked = delivery(app, replay)
    assert (parked.status, parked.attempts - parked.deferrals) == (DeliveryStatus.PENDING, 0)
    assert parked.last_error == CATCH_UP_PARKED
    assert budget(sandbox)["relay"] == 12  # it did not call

    assert deliver(app, late) == "succeeded"  # live goes on below the catch-up reserve
    assert (budget(sandbox)["relay"], budget(sandbox)["relay_refused"]) == (14, 0)


@ONE_STORE
def test_live_never_spends_into_the_live_reserve(relay_app, sandbox):
    # A day of 20 calls and a live reserve of 10%: two calls are kept.
    sandbox.configure(rate_limit={"spruce": {"limit": 240, "daily_limit": 20, "day_s": 120}})
    app = relay_app(RELAY_RESERVE_LIVE="10%")
    spruce = spruce_deliveries(app, 11)
    assert [deliver(app, d) for d in spruce] == ["succeeded"] * 9 + ["deferred"] * 2
    shown = budget(sandbox)
    assert (shown["relay"], shown["relay_refused"], shown["lowest_daily_remaining_after_relay"]) == (18, 0, 2)
    for parked in spruce[9:]:
        waiting = delivery(app, parked)
        assert (waiting.status, waiting.attempts - waiting.deferrals) == (DeliveryStatus.PENDING, 0)
        assert waiting.last_error == "parked: Spruce's daily remaining at its live reserve (10%)"


@ONE_STORE
def test_a_parked_delivery_goes_again_after_the_day_turns_over(relay_app, sandbox):
    # A four-second day of 8 calls; catch-up keeps 2. One probe a second at most while parked.
    sandbox.configure(rate_limit={"spruce": {"limit": 240, "daily_limit": 8, "day_s": 4}})
    app = relay_app(RELAY_PARK_PROBE="1s")
    *live, replay = spruce_deliveries(app, 4)
    make_catch_up(app, replay)
    assert [deliver(app, d) for d in live] == ["succeeded"] * 3  # 6 calls: 2 remain
    assert deliver(app, replay) == "deferred"
    assert delivery(app, replay).last_error == CATCH_UP_PARKED

    time.sleep(4.2)  # the day turns over; the headers Relay last saw still say 2 remain
    make_due(app)
    assert deliver(app, replay) == "succeeded"  # its first call was the probe, and met the new day
    done = delivery(app, replay)
    assert done.deferrals >= 1 and done.attempts - done.deferrals == 1  # the parking spent no attempt
    assert budget(sandbox)["relay_refused"] == 0

    learned = daily_reading(app)  # the jump from 2 to 7 left was the turnover, learned
    assert learned["turned_at"] <= learned["at"] and learned["remaining"] == 8 - 2


def daily_reading(app) -> dict[str, int]:
    client = Runtime.of(app).redis
    [key] = [k for k in client.scan_iter("relay:reserve:spruce:*") if k.count(b":") == 3]
    return {name.decode(): int(value) for name, value in client.hgetall(key).items()}
