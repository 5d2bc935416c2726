"""Reserves (workers.reserves): against the sandbox's daily window, catch-up parks at its reserve
while live still goes, live never spends into its own, a parked delivery spends no attempt and
goes again once the day has turned over (found by one probe), and the turnover is learned;
against Sprig's configured window, catch-up and retry park at theirs; workers granting at once
never spend into a reserve; a destination's own reserves, and the errors that name them."""

from __future__ import annotations

import threading
import time

import pytest
import redis
import sqlalchemy as sa

from relay.config import CallRate, ConfigError, load_config
from relay.core_settings import ReserveShares
from relay.models import Delivery, DeliveryStatus, Lane
from relay.runtime import Runtime
from testbed.apps import deliver, deliveries, make_due, post_event, sandbox_state
from testbed.drills.traffic import referral_event
from workers.outcomes import Deferred
from workers.reserves import Parked, Reserves
from workers.throttle import Pacing, Throttle

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


def budget(sandbox, vendor: str = "spruce") -> dict:
    return sandbox_state(sandbox)["budgets"][vendor]


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


# --- one atomic step: the throttle's grant and the reserves -------------------------------------

LIVE, RETRY, CATCH_UP = Pacing(), Pacing(retry=True), Pacing(lane=Lane.CATCH_UP)


def spruce_said(throttle: Throttle, **said: int) -> None:
    """One call, answered with Spruce's headers `said` (limit, remaining, daily_limit, daily_remaining)."""
    throttle.finished(throttle.acquire(Pacing()), **said)


def granted(throttle: Throttle, pacing: Pacing) -> bool:
    """Whether the call went; False when a reserve parked it."""
    try:
        throttle.acquire(Pacing(pacing.lane, retry=pacing.retry))
    except Parked:
        return False
    return True


@pytest.mark.parametrize("window", ["minute", "daily"])
def test_workers_granting_at_once_never_spend_into_a_reserve(redis_url, r, window):
    # 20 left of 100, the retry reserve keeping 10: exactly 10 of 16 threads x 4 tries go.
    said = {"limit": 100, "remaining": 20} if window == "minute" else {"daily_limit": 100, "daily_remaining": 20}
    spruce_said(Throttle(r, "spruce:acct", CallRate(1000, 60.0), reserves=Reserves()), **said)
    start, grants, parked = threading.Barrier(16), [], []

    def worker() -> None:
        client = redis.Redis.from_url(redis_url)  # a connection of its own, as a worker process has
        throttle = Throttle(client, "spruce:acct", CallRate(1000, 60.0), reserves=Reserves())
        start.wait(timeout=10)
        for _ in range(4):
            (grants if granted(throttle, RETRY) else parked).append(1)
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert (len(grants), len(parked)) == (10, 54)


def test_catch_up_and_retry_park_on_the_configured_window_of_a_vendor_that_reports_none(r):
    # 20 calls per 2 s: catch-up keeps 5, retry 2; live spends the window to its end.
    throttle = Throttle(r, "sprig:acct", CallRate(20, 2.0), reserves=Reserves())
    assert all(granted(throttle, LIVE) for _ in range(15))
    with pytest.raises(Parked) as catch_up:
        throttle.acquire(CATCH_UP)
    assert catch_up.value.reason == "parked: Sprig's configured 20/2s remaining at its catch-up reserve (25%)"
    assert 1.8 < catch_up.value.wait_s <= 2.1  # until the window has room again
    assert [granted(throttle, RETRY) for _ in range(4)] == [True, True, True, False]
    assert [granted(throttle, LIVE) for _ in range(2)] == [True, True]
    assert throttle.snapshot()["calls_in_window"] == 20

    time.sleep(catch_up.value.wait_s + 0.5)  # the wait is until the first call leaves; then the first 15 left
    assert granted(throttle, CATCH_UP)


def test_a_replays_estimate_counts_the_catch_up_reserve_of_the_configured_window(r):
    # 4 calls per 2 s, one each 0.5 s: catch-up keeps 1, so the 4th call waits for a park (1 s).
    throttle = Throttle(r, "sprig:acct", CallRate(4, 2.0), reserves=Reserves())
    estimate = throttle.sending_time_s(4, Lane.CATCH_UP)
    assert estimate == pytest.approx(2.5) and Throttle(r, "a", CallRate(4, 2.0)).sending_time_s(4, Lane.CATCH_UP) == 1.5
    started = time.monotonic()
    for _ in range(4):
        sent_after_waits(throttle, Lane.CATCH_UP)
    assert estimate - 0.02 <= time.monotonic() - started <= estimate * 1.25 + 0.15
    spruce_said(throttle, daily_limit=1000, daily_remaining=900)  # a vendor's own window: no configured one
    assert throttle.sending_time_s(4, Lane.CATCH_UP) == 1.5


def sent_after_waits(throttle: Throttle, lane: Lane) -> None:
    """One call, as a delivery's runs make it: each sleeps the wait it was told (parked or not)."""
    pacing = Pacing(lane=lane)
    for _ in range(20):
        try:
            throttle.acquire(pacing)
            return
        except Deferred as deferred:
            pacing = Pacing(lane=lane, reserved=deferred.slot)
            time.sleep(deferred.wait_s)
    pytest.fail("the throttle never let the call through")


def test_the_windows_a_vendor_reports_replace_the_configured_one(r):
    throttle = Throttle(r, "spruce:acct", CallRate(10, 60.0), reserves=Reserves())
    spruce_said(throttle, daily_limit=1000, daily_remaining=900)
    assert [granted(throttle, RETRY) for _ in range(9)] == [True] * 9  # 10 in the configured window


# --- Sprig's configured window, end to end; a destination's own reserves ------------------------


def sprig_deliveries(app, events: int) -> list[int]:
    client = app.test_client()
    for n in range(events):
        assert post_event(client, referral_event(n)).status_code == 200
    return [d.id for d in deliveries(app) if d.destination == "sprig"]


@ONE_STORE
@pytest.mark.parametrize(
    ("own", "live_before", "shown"), [({}, 6, "25%"), ({"RELAY_SPRIG_RESERVE_CATCH_UP": "50%"}, 4, "50%")]
)
def test_a_replay_parks_at_the_catch_up_reserve_of_sprigs_configured_window(
    relay_app, sandbox, own, live_before, shown
):
    # Sprig reports no window: SPRIG_RATE_LIMIT's 16 a minute is the one the reserves keep a share
    # of. Each delivery makes two calls (the new subscriber and the referrer).
    app = relay_app(SPRIG_RATE_LIMIT="16/60s", SPRUCE_API_TOKEN="", **own)
    *live, replay, late = sprig_deliveries(app, live_before + 2)
    make_catch_up(app, replay)
    assert [deliver(app, d) for d in live] == ["succeeded"] * live_before

    assert deliver(app, replay) == "deferred"
    parked = delivery(app, replay)
    assert (parked.status, parked.attempts - parked.deferrals) == (DeliveryStatus.PENDING, 0)
    assert parked.last_error == f"parked: Sprig's configured 16/60s remaining at its catch-up reserve ({shown})"
    assert deliver(app, late) == "succeeded"  # live spends what the catch-up reserve kept
    assert budget(sandbox, "sprig")["relay"] == 2 * (live_before + 1)


def reserves_read(**env: str) -> dict[str, ReserveShares]:
    config = load_config(env, instance_path="/tmp/relay-instance")
    return {name: config.reserves(name) for name in ("spruce", "sprig", "sparkloop")}


def test_a_destination_s_own_reserves_replace_relays_lane_by_lane():
    read = reserves_read(RELAY_RESERVE_RETRY="5%", RELAY_SPRUCE_RESERVE_CATCH_UP="40%", RELAY_SPRUCE_RESERVE_LIVE="1%")
    assert read == {
        "spruce": ReserveShares(0.40, 0.05, 0.01),
        "sprig": ReserveShares(0.25, 0.05, 0.02),
        "sparkloop": ReserveShares(0.25, 0.05, 0.02),
    }
    assert reserves_read(RELAY_SPRIG_RESERVE_RETRY="2%")["sprig"] == ReserveShares(0.25, 0.02, 0.02)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RELAY_SPRUCE_RESERVE_LIVE": "100%"}, "RELAY_SPRUCE_RESERVE_LIVE must be a share like 25% (from 0% to under"),
        ({"RELAY_SPRIG_RESERVE_RETRY": "-1%"}, "RELAY_SPRIG_RESERVE_RETRY must be a share like 25%"),
        (
            {"RELAY_SPRUCE_RESERVE_RETRY": "30%"},
            "RELAY_SPRUCE_RESERVE_RETRY must be at most RELAY_RESERVE_CATCH_UP (25%) (got 30%)",
        ),
        (
            {"RELAY_SPRUCE_RESERVE_CATCH_UP": "5%"},
            "RELAY_SPRUCE_RESERVE_CATCH_UP must be at least RELAY_RESERVE_RETRY (10%) (got 5%)",
        ),
        (
            {"RELAY_SPRUCE_RESERVE_RETRY": "5%", "RELAY_SPRUCE_RESERVE_LIVE": "7.5%"},
            "RELAY_SPRUCE_RESERVE_LIVE must be at most RELAY_SPRUCE_RESERVE_RETRY (5%) (got 7.5%)",
        ),
        ({"RELAY_RESERVE_LIVE": "20%"}, "RELAY_RESERVE_LIVE must be at most RELAY_RESERVE_RETRY (10%) (got 20%)"),
    ],
)
def test_a_reserve_out_of_range_or_order_is_refused_naming_its_variable(env, message):
    with pytest.raises(ConfigError) as refused:
        reserves_read(**env)
    assert str(refused.value).startswith(message)
