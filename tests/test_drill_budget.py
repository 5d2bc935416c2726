"""The Budget drill, small: Spruce allows 50 calls a "day" of 10 s (and 240 a minute), another
integration spends one every 2 s; 30 Spruce notes refused earlier are replayed (catch-up) while
live reward notes arrive at 1 a second for 12 s, past the first turn of the day; a real worker
and beat, the reserves at their defaults, RELAY_PARK_PROBE 2 s. Issue 19's five criteria
(testbed.drills.budget.criteria): live webhooks at Spruce within 10 s of their 200; the replay
parked on the day's catch-up reserve and finished after the day turned; 0 Spruce 429s; the daily
remaining never below the live reserve because of Relay; nothing lost or done twice. A
redis-server of its own. bench/drills/budget.py runs it at the issue's size."""

from __future__ import annotations

import pytest

from testbed.drills.budget import budget_drill, criteria, reserve_calls

DAILY_LIMIT = 50


# About 45 s on the 2-core machine at a load average of 8 to 10 (setup 18 s, the workers' start
# 12 s, the drill 13 s); 101 s at 12, most of it the setup's and the workers' start.
@pytest.mark.timeout(240)
def test_catch_up_spends_what_live_work_and_the_other_integration_leave_of_spruces_day(
    drill_for, sandbox, redis_server
):
    drill = drill_for("relay_drill_budget", redis_server.url)
    run = budget_drill(drill, sandbox, replays=30, live=12, per_second=1, limit=240, daily_limit=DAILY_LIMIT,
                       day_s=10, other_every_s=2, workers=1, within_s=30, RELAY_PARK_PROBE="2s")

    verdicts = criteria(run, 10, reserve_calls(0.02, DAILY_LIMIT), reserve_calls(0.25, DAILY_LIMIT))
    failed = {name: shown for name, (passed, shown) in verdicts.items() if not passed}
    assert failed == {}, (failed, run, drill.logs())
    assert len(run.days) >= 2 and run.days[0]["relay"] > 0 and run.days[1]["relay"] > 0, run.days
