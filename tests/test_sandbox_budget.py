"""Spruce's budget in the sandbox, per organization: the minute window, the daily window (its length
set, so a test day can last seconds), another integration of the organization spending the same
budget, and what /_sandbox/state says each window saw; then what Relay makes of the daily headers
(its attempts record them; a day spent makes it wait RELAY_PARK_PROBE, then probe). The sandbox's own
windows are driven here on a made-up clock (sandbox.budget.Budget takes the time it counts at);
tests/test_sandbox.py checks the same over HTTP."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from operations.stats import vendor_states
from relay.models import Delivery, DeliveryAttempt, DeliveryStatus, utcnow
from relay.runtime import Runtime
from sandbox.budget import Budget
from testbed.apps import deliver, deliveries, delivery_to, make_due, post_event, sandbox_state
from testbed.drills.traffic import referral_event

SPRUCE = {"limit": 240, "window_s": 60, "daily_limit": 400, "day_s": 120, "other_integration_every_s": None}
ONE_STORE = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # about the vendor, not the store


def budget(**changes) -> Budget:
    return Budget({**SPRUCE, **changes}, now=0.0)


# --- the sandbox's windows, on a made-up clock -------------------------------------------------


def test_each_call_counts_against_the_minute_and_the_day():
    spruce = budget()
    first, second = spruce.spend(1.0), spruce.spend(2.0)
    assert (first.allowed, first.limit, first.remaining, first.daily_limit, first.daily_remaining) == (
        True, 240, 239, 400, 399)
    assert (second.remaining, second.daily_remaining) == (238, 398)
    assert first.reset_after == 60  # the minute window started with the first call


def test_without_a_daily_limit_there_is_no_day():
    window = budget(daily_limit=None).spend(1.0)
    assert (window.daily_limit, window.daily_remaining) == (None, None)
    assert budget(daily_limit=None).shown(5.0)["windows"]["day"] == []


def test_a_spent_day_refuses_until_it_turns_over():
    spruce = budget(daily_limit=3, day_s=10)
    assert [spruce.spend(t).allowed for t in (1.0, 2.0, 3.0)] == [True, True, True]
    refused = spruce.spend(4.0)
    assert (refused.allowed, refused.daily_remaining, refused.remaining, refused.reset_after) == (False, 0, 237, 6)
    turned = spruce.spend(10.0)  # days follow each other from when the limits were set
    assert (turned.allowed, turned.daily_remaining) == (True, 2)
    shown = spruce.shown(10.5)
    first_day, second_day = shown["windows"]["day"]
    assert (first_day["relay"], first_day["relay_refused"], first_day["lowest_remaining"]) == (3, 1, 0)
    assert (second_day["relay"], second_day["remaining"]) == (1, 2)
    assert (shown["relay"], shown["relay_refused"], shown["relay_refused_by_day"]) == (4, 1, 1)
    assert shown["lowest_daily_remaining"] == shown["lowest_daily_remaining_after_relay"] == 0


def test_a_spent_minute_refuses_until_the_minute_is_over():
    spruce = budget(limit=2)
    assert [spruce.spend(t).allowed for t in (5.0, 6.0, 7.0)] == [True, True, False]
    assert spruce.spend(64.9).allowed is False  # the window began at 5 s
    assert spruce.spend(65.0).allowed is True
    shown = spruce.shown(66.0)
    assert (shown["relay_refused"], shown["relay_refused_by_day"]) == (2, 0)
    assert [(w["relay"], w["relay_refused"]) for w in shown["windows"]["minute"]] == [(2, 2), (1, 0)]


def test_the_other_integration_spends_the_same_windows_at_its_pace():
    spruce = budget(other_integration_every_s=2)
    window = spruce.spend(10.0)  # its calls at 2, 4, 6, 8 and 10 s came first
    assert (window.remaining, window.daily_remaining) == (240 - 6, 400 - 6)
    shown = spruce.shown(130.0)  # its calls at 2 … 130 s: 65
    assert (shown["relay"], shown["other"]) == (1, 65)
    # Its first call opened the first minute window (2 s to 62 s: 30 calls and Relay's), the
    # next at 62 s the second (62 … 120 s), the one at 122 s the third.
    minutes = [(w["relay"], w["other"]) for w in shown["windows"]["minute"]]
    assert minutes == [(1, 30), (0, 30), (0, 5)]
    days = [(w["relay"], w["other"], w["remaining"]) for w in shown["windows"]["day"]]
    assert days == [(1, 59, 340), (0, 6, 394)]  # 2 … 118 s, then 120 … 130 s


def test_the_other_integration_is_refused_too_when_the_budget_is_spent():
    spruce = budget(daily_limit=10, other_integration_every_s=1)
    for t in (0.5, 0.6, 0.7):
        spruce.spend(t)
    shown = spruce.shown(15.0)  # 15 calls of its own: 7 fit in the day
    assert (shown["relay"], shown["other"], shown["other_refused"]) == (3, 7, 8)
    assert shown["lowest_daily_remaining"] == 0
    assert shown["lowest_daily_remaining_after_relay"] == 7  # Relay left 7; the other integration spent the rest
    assert spruce.spend(15.5).allowed is False and spruce.spend(120.0).daily_remaining == 10 - 2  # its own at 120 s, Relay's


def test_a_long_idle_spell_is_counted_by_the_window_not_by_the_call():
    spruce = budget(daily_limit=None, other_integration_every_s=0.001)
    started = time.monotonic()
    shown = spruce.shown(7 * 24 * 3600.0)
    assert time.monotonic() - started < 2.0
    assert shown["other"] == 240 * 7 * 24 * 60  # every minute window filled to its limit
    assert len(shown["windows"]["minute"]) == 100 + 1  # the latest finished ones kept, and the current one


def test_pacing_the_other_integration_keeps_the_windows():
    spruce = budget()
    spruce.spend(1.0)
    spruce.pace_other(0.5, 10.0)
    spruce.pace_other(None, 12.0)  # it spent 4 calls meanwhile
    shown = spruce.shown(100.0)
    assert (shown["relay"], shown["other"], shown["other_integration_every_s"]) == (1, 4, None)
    assert shown["windows"]["day"][-1]["remaining"] == 395


# --- what Relay makes of the daily headers ------------------------------------------------------


def spruce_attempts(app) -> list[DeliveryAttempt]:
    with Runtime.of(app).db.session() as session:
        query = (
            sa.select(DeliveryAttempt)
            .join(Delivery)
            .where(Delivery.destination == "spruce")
            .order_by(DeliveryAttempt.id)
        )
        return list(session.scalars(query))


@ONE_STORE
def test_relay_records_the_daily_headers_of_a_real_delivery(relay_app, sandbox):
    sandbox.configure(rate_limit={"spruce": {"limit": 240, "daily_limit": 400, "day_s": 120}})
    app = relay_app()
    post_event(app.test_client(), referral_event(0))
    assert deliver(app, delivery_to(app, "spruce").id) == "succeeded"
    [attempt] = spruce_attempts(app)
    # Two calls (search, create), each counted against both windows.
    assert attempt.rate_limits == {"limit": 240, "remaining": 238, "daily_limit": 400, "daily_remaining": 398}
    assert sandbox_state(sandbox)["budgets"]["spruce"]["relay"] == 2


@ONE_STORE
def test_a_spent_day_makes_relay_wait_a_probe_interval_without_calling(relay_app, sandbox):
    sandbox.configure(rate_limit={"spruce": {"limit": 240, "daily_limit": 4, "day_s": 120}})
    app = relay_app(RELAY_PARK_PROBE="10m")
    client = app.test_client()
    for n in range(3):
        post_event(client, referral_event(n))
    spruce = [d.id for d in deliveries(app) if d.destination == "spruce"]
    assert [deliver(app, delivery_id) for delivery_id in spruce[:2]] == ["succeeded", "succeeded"]
    assert spruce_attempts(app)[-1].rate_limits["daily_remaining"] == 0
    assert vendor_states(Runtime.of(app))["spruce"]["paused_for_s"] > 590

    assert deliver(app, spruce[2]) == "deferred"
    [waiting] = [d for d in deliveries(app) if d.id == spruce[2]]
    assert (waiting.status, waiting.attempts - waiting.deferrals) == (DeliveryStatus.PENDING, 0)
    assert waiting.next_attempt_at - utcnow() > timedelta(minutes=9)
    assert sandbox_state(sandbox)["budgets"]["spruce"]["relay_refused"] == 0  # it did not ask


@ONE_STORE
def test_after_the_wait_one_call_probes_and_finds_the_new_day(relay_app, sandbox):
    """The probe interval outlasts a three-second day: the call after it meets the new day."""
    sandbox.configure(rate_limit={"spruce": {"limit": 240, "daily_limit": 2, "day_s": 3}})
    app = relay_app(RELAY_PARK_PROBE="4s")
    client = app.test_client()
    for n in range(2):
        post_event(client, referral_event(n))
    first, second = [d.id for d in deliveries(app) if d.destination == "spruce"]
    assert deliver(app, first) == "succeeded"
    assert deliver(app, second) == "deferred"  # paused until the day is surely over
    assert sandbox_state(sandbox)["budgets"]["spruce"]["relay_refused"] == 0
    time.sleep(4.1)
    make_due(app)
    assert deliver(app, second) == "succeeded"
    assert spruce_attempts(app)[-1].rate_limits["daily_remaining"] == 0  # the new day's two calls
    days = sandbox_state(sandbox)["budgets"]["spruce"]["windows"]["day"]
    assert [day["relay"] for day in days if day["relay"]] == [2, 2]
