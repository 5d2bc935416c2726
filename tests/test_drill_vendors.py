"""The vendors' faults during a stream of webhooks, with real worker processes: a vendor down
for a while, 429 storms with Retry-After, a vendor slower than Relay's client timeout; and
SparkLoop's duplicate storms (every webhook three times, some copies at once). Every accepted
webhook ends done, none is lost, and the vendors hold nothing twice. bench/drills/ runs them at
full size (vendor_down.py, rate_limit_storm.py, slow_vendor.py, duplicate_storm.py)."""
from __future__ import annotations

import pytest

from tests.conftest import deliveries
from tests.drills import duplicate_storm, rate_limit_storm, slow_vendor, vendor_down

# A database and a Redis db of these drills' own (drill_for): clear of the suite's processes
# (conftest.REDIS_DBS), the other drills (11, 7, 6, 5, 4) and the benchmarks (14).
DRILL_DATABASE, DRILL_REDIS_DB = "relay_drill_vendors", 2
# The breaker's cooldown is 30 s in production; a CI-sized outage lasts a few seconds.
SHORT_COOLDOWN = {"RELAY_BREAKER_COOLDOWN": "2s"}


@pytest.fixture
def drill(drill_for, redis_url):
    return drill_for(DRILL_DATABASE, f"{redis_url.rsplit('/', 1)[0]}/{DRILL_REDIS_DB}")


def all_done(healed, accepted: int) -> None:
    tally = healed.tally
    assert (tally.lost, tally.duplicates) == (0, 0), healed
    assert (tally.accepted, tally.done, tally.failed) == (accepted, accepted, 0), healed
    assert healed.events == accepted and healed.healed_s is not None, healed


def test_a_vendor_down_loses_and_duplicates_nothing(drill, sandbox):
    healed = vendor_down(drill, sandbox, subscribers=30, down_s=3, after_s=0.5, workers=1, within_s=40,
                         **SHORT_COOLDOWN)
    all_done(healed, 30)
    assert healed.answers == {200: 30} and healed.dead == [], (healed, drill.logs())
    assert sandbox.stats()["spruce"].get("503"), "the outage met no delivery"
    assert {d.status for d in deliveries(drill._app)} == {"succeeded"}


def test_429_storms_lose_nothing_and_spend_no_attempt(drill, sandbox):
    healed = rate_limit_storm(drill, sandbox, subscribers=30, storms=2, storm_s=2, every_s=2.5, retry_after_s=1,
                              workers=1, within_s=40)
    all_done(healed, 30)
    assert healed.answers == {200: 30} and healed.dead == [], (healed, drill.logs())
    assert healed.tally.throttled, "the storms met no delivery"
    # A 429 defers (pending again after Retry-After, no attempt spent): one real attempt each.
    spent = {d.id: d.attempts - d.deferrals for d in deliveries(drill._app)}
    assert set(spent.values()) == {1}, spent


def test_a_vendor_slower_than_the_timeout_loses_and_duplicates_nothing(drill, sandbox):
    healed = slow_vendor(drill, sandbox, subscribers=20, slow_s=3, after_s=0.5, timeout_s=1, workers=1,
                         within_s=40, **SHORT_COOLDOWN)
    all_done(healed, 20)
    assert healed.answers == {200: 20} and healed.dead == [], (healed, drill.logs())
    retried = [d for d in deliveries(drill._app) if d.attempts - d.deferrals > 1]
    assert retried, "no call outlasted the timeout"


def test_duplicate_storms_are_stored_and_delivered_once(drill, sandbox):
    healed = duplicate_storm(drill, sandbox, subscribers=20, per_second=10, workers=1, within_s=40)
    all_done(healed, 20)
    assert healed.answers == {200: 60} and healed.retried == 0, healed  # every copy answered 200
    assert healed.dead == [], (healed, drill.logs())
    assert len(deliveries(drill._app)) == 2 * 20  # Sprig and Spruce, once each
