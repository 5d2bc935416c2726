"""Workers die during a stream of webhooks (their process killed, or their whole machine gone):
every event is done within 60 s of the last death, nothing is done twice, and `relay worker`
has each killed worker running again. bench/drills/workers_killed.py runs it at full size."""
from __future__ import annotations

from testbed.drills.scenarios import killed_workers
from testbed.drills.verdicts import HEAL_WITHIN_S


def test_workers_killed_during_a_stream_lose_and_duplicate_nothing(drill_for, sandbox, redis_url):
    drill = drill_for("relay_drill_workers", redis_url.rsplit("/", 1)[0] + "/7")
    # Three deaths 2 s apart, all while the 6 s stream still comes in: the worker process killed
    # (the first and third: `relay worker` starts it again), and the whole machine gone (the
    # second: a new one started). Five, 3 s apart, added two more of the same after the stream.
    healed = killed_workers(drill, sandbox, subscribers=60, kill_every_s=2, kills=3)
    assert healed.healed_s is not None and healed.healed_s <= HEAL_WITHIN_S, (healed, drill.logs())
    assert healed.answers == {200: 60}
    assert healed.duplicates == [], healed
    assert healed.dead == [], (healed, drill.logs())
