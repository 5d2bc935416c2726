"""`relay dev` restarted: the store and the sandbox's records outlive it (the Spruce ids Relay
keeps stay valid), `--fresh` refuses without a terminal or --yes, and `--fresh --yes` empties
both. A file of its own: two real `relay dev` runs, beside test_dev.py's in another process."""
from __future__ import annotations

import pytest

from sandbox import FIXTURES
from testbed.waiting import wait_for
from testbed.dev_processes import dev_env, dev_ports, relay_dev, relay_events, run_relay, sourced


# relay dev start-ups and other terminals' commands: a loaded machine needs more than
# the suite's 120 s; every wait inside is bounded on its own.
@pytest.mark.timeout(300)
def test_a_restart_keeps_the_store_and_the_sandbox_and_fresh_empties_both(tmp_path):
    instance, args = tmp_path / "instance", dev_ports()
    with relay_dev(tmp_path, instance, args, "first") as dev:
        assert dev.post(FIXTURES / "reward_unlocked.json") == 200
        assert wait_for(lambda: "spruce  event 1  delivered (200)" in dev.live(), timeout=60, interval=0.5), dev.shown()
        assert dev.stop() == 0

    with relay_dev(tmp_path, instance, args, "second") as dev:
        assert len(dev.sandbox_state()["spruce"]["contacts"]) == 1  # the contact Relay links to is still there
        assert "Note:" not in dev.shown()
        assert dev.stop() == 0

    refused = run_relay(dev_env(instance), "dev", *args, "--fresh")  # no terminal to ask, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert [e["type"] for e in relay_events(dev_env(instance))] == ["reward_unlocked"]

    with relay_dev(tmp_path, instance, [*args, "--fresh", "--yes"], "fresh") as dev:
        assert "Started fresh" in dev.shown() and "Note:" not in dev.shown()
        assert relay_events(sourced(instance)) == []
        assert dev.sandbox_state()["spruce"]["contacts"] == []
        assert dev.stop() == 0
