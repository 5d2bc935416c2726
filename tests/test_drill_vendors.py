"""The vendors' faults during a stream of webhooks, with real worker processes: a vendor down
for a while, a vendor slower than Relay's client timeout (the storms are in
test_drill_storms.py, a file of its own so the suite runs it beside this one). Every accepted
webhook ends done, none is lost, and the vendors hold nothing twice. bench/drills/ runs them at
full size (vendor_down.py, slow_vendor.py)."""
from __future__ import annotations

import pytest

from testbed.apps import deliveries
from testbed.drills.scenarios import slow_vendor, vendor_down
from testbed.drills.verdicts import assert_all_done

# A database and a Redis db of these drills' own (drill_for): clear of the suite's processes
# (testbed.services.REDIS_DBS), the other drills (11, 7, 6, 5, 4, 1) and the benchmarks (14).
DRILL_DATABASE, DRILL_REDIS_DB = "relay_drill_vendors", 2
# The breaker's cooldown is 30 s in production; a CI-sized outage lasts a few seconds.
SHORT_COOLDOWN = {"RELAY_BREAKER_COOLDOWN": "2s"}


@pytest.fixture
def drill(drill_for, redis_url):
    return drill_for(DRILL_DATABASE, f"{redis_url.rsplit('/', 1)[0]}/{DRILL_REDIS_DB}")


def test_a_vendor_down_loses_and_duplicates_nothing(drill, sandbox):
    healed = vendor_down(drill, sandbox, subscribers=30, down_s=3, after_s=0.5, workers=1, within_s=40,
                         **SHORT_COOLDOWN)
    assert_all_done(healed, 30)
    assert healed.answers == {200: 30} and healed.dead == [], (healed, drill.logs())
    assert sandbox.stats()["spruce"].get("503"), "the outage met no delivery"
    assert {d.status for d in deliveries(drill._app)} == {"succeeded"}


def test_a_vendor_slower_than_the_timeout_loses_and_duplicates_nothing(drill, sandbox):
    healed = slow_vendor(drill, sandbox, subscribers=20, slow_s=3, after_s=0.5, timeout_s=1, workers=1,
                         within_s=40, **SHORT_COOLDOWN)
    assert_all_done(healed, 20)
    assert healed.answers == {200: 20} and healed.dead == [], (healed, drill.logs())
    retried = [d for d in deliveries(drill._app) if d.attempts - d.deferrals > 1]
    assert retried, "no call outlasted the timeout"
