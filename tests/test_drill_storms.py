"""SparkLoop's and the vendors' storms during a stream of webhooks, with real worker processes:
429 storms with Retry-After, and every webhook three times (some copies at once). Every
accepted webhook ends done, none is lost, and the vendors hold nothing twice. bench/drills/
runs them at full size (rate_limit_storm.py, duplicate_storm.py)."""
from __future__ import annotations

import pytest

from testbed.apps import deliveries
from testbed.drills.scenarios import duplicate_storm, rate_limit_storm
from testbed.drills.verdicts import assert_all_done

# A database and a Redis db of these drills' own (drill_for): clear of the suite's processes
# (testbed.services.REDIS_DBS), the other drills (11, 7, 6, 5, 4, 2) and the benchmarks (14).
DRILL_DATABASE, DRILL_REDIS_DB = "relay_drill_storms", 1


@pytest.fixture
def drill(drill_for, redis_url):
    return drill_for(DRILL_DATABASE, f"{redis_url.rsplit('/', 1)[0]}/{DRILL_REDIS_DB}")


def test_429_storms_lose_nothing_and_spend_no_attempt(drill, sandbox):
    healed = rate_limit_storm(drill, sandbox, subscribers=30, storms=2, storm_s=2, every_s=2.5, retry_after_s=1,
                              workers=1, within_s=40)
    assert_all_done(healed, 30)
    assert healed.answers == {200: 30} and healed.dead == [], (healed, drill.logs())
    assert healed.tally.throttled, "the storms met no delivery"
    # A 429 defers (pending again after Retry-After, no attempt spent): one real attempt each.
    spent = {d.id: d.attempts - d.deferrals for d in deliveries(drill._app)}
    assert set(spent.values()) == {1}, spent


def test_duplicate_storms_are_stored_and_delivered_once(drill, sandbox):
    healed = duplicate_storm(drill, sandbox, subscribers=20, per_second=10, workers=1, within_s=40)
    assert_all_done(healed, 20)
    assert healed.answers == {200: 60} and healed.retried == 0, healed  # every copy answered 200
    assert healed.dead == [], (healed, drill.logs())
    assert len(deliveries(drill._app)) == 2 * 20  # Sprig and Spruce, once each
