"""A deploy under load: web and workers restarted one after the other, as a PaaS does, while
webhooks keep coming. Nothing is lost or done twice, no webhook goes unanswered, and no
delivery waits for a stopped worker's lease. bench/drills/restart.py runs it at full size."""
from __future__ import annotations

from testbed.drills.scenarios import rolling_restart
from testbed.drills.verdicts import HEAL_WITHIN_S


def test_a_rolling_restart_under_load_loses_and_duplicates_nothing(drill_for, sandbox, redis_url):
    drill = drill_for("relay_drill_restart", redis_url.rsplit("/", 1)[0] + "/4")
    healed = rolling_restart(drill, sandbox, subscribers=60, restarts=2, every_s=2)
    assert healed.healed_s is not None and healed.healed_s <= HEAL_WITHIN_S, (healed, drill.logs())
    assert healed.answers == {200: 60} and healed.retried == 0, healed  # the web finished what it was answering
    assert healed.duplicates == [], healed
    assert healed.lease_waits == 0, (healed, drill.logs())
    assert healed.dead == [], (healed, drill.logs())
