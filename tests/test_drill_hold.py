"""The Hold drill, small: Spruce held while 50 webhooks come in (10 subscribers, 5 each), real
worker and beat processes; Sprig gets all 50, Spruce none, and the 50 show as held; every process
restarts and the hold stands; after `relay destinations resume spruce` each reaches Spruce once,
in the order it arrived for its subscriber. A redis-server of its own (every Redis db the suite
may use on the test server is taken). bench/drills/hold.py runs it at full size."""
from __future__ import annotations

from testbed.drills.hold import hold_drill


def test_a_held_spruce_gets_nothing_until_resumed_then_each_webhook_once_in_order(drill_for, sandbox, redis_server):
    drill = drill_for("relay_drill_hold", redis_server.url)
    seen = hold_drill(drill, sandbox, subscribers=10, events_each=5)
    assert (seen.webhooks, seen.sprig_done, seen.held_shown) == (50, 50, 50), (seen.line(), drill.logs())
    assert (seen.spruce_calls_held, seen.spruce_calls_after_restart, seen.spruce_attempts_held) == (0, 0, 0), \
        seen.line()
    assert seen.hold_after_restart, seen.line()
    assert "held: 50 deliveries: live 50\n" in seen.resume_output, seen.resume_output
    assert seen.spruce_done == 50 and seen.drained_s is not None, (seen.line(), drill.logs())
    assert len(seen.notes_posted) == 50 and seen.twice == [], seen.line()
    assert len(seen.notes_in_order) == 10 and seen.out_of_order == [], seen.notes_in_order
    assert all(counts == [1, 2, 3, 4, 5] for counts in seen.notes_in_order.values()), seen.notes_in_order
    assert seen.dead == [], (seen.line(), drill.logs())
