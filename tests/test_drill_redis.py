"""Redis restarts with its data gone during a stream of webhooks: every event is done within
60 s of its return, nothing is done twice, and every worker and beat is still running.
bench/drills/redis_flushed.py runs it at full size."""
from __future__ import annotations

from testbed.drills.scenarios import redis_restarted_empty
from testbed.drills.verdicts import HEAL_WITHIN_S


def test_redis_restarted_empty_loses_and_duplicates_nothing(drill_for, sandbox, redis_server):
    drill = drill_for("relay_drill_redis", redis_server.url)
    healed = redis_restarted_empty(drill, sandbox, redis_server, subscribers=60, down_s=5)
    assert healed.healed_s is not None and healed.healed_s <= HEAL_WITHIN_S, (healed, drill.logs())
    assert healed.answers == {200: 60}  # the store was up: every webhook was accepted
    assert healed.duplicates == [], healed
    assert healed.dead == [], (healed, drill.logs())
