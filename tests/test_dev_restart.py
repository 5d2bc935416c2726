"""`relay dev --fresh`: it refuses without a terminal or --yes, and `--fresh --yes` empties the
store and the sandbox's records. A file of its own: a real `relay dev` run, beside test_dev.py's
(which restarts `relay dev` and sees both kept) in another process. What an earlier run leaves
is made here in this process: a delivered example in instance/'s SQLite store and in the
sandbox's state file there."""
from __future__ import annotations

from pathlib import Path

import pytest

from relay.runtime import Runtime
from sandbox import SandboxSettings, serve_in_thread
from testbed.apps import deliveries, fresh_services, make_app, post_event, run_pending
from testbed.dev_processes import dev_env, dev_ports, relay_dev, relay_events, run_relay, sourced
from testbed.examples import load_fixture
from web.cli.dev import SANDBOX_STATE


def left_by_a_run(instance: Path, redis_url: str) -> None:
    """The reward_unlocked example delivered to a sandbox that keeps its records in instance/,
    by Relay on instance/'s SQLite store: what `relay dev` leaves after one."""
    instance.mkdir(parents=True)
    sandbox = serve_in_thread("127.0.0.1", 0, settings=SandboxSettings(state_file=str(instance / SANDBOX_STATE)))
    try:
        env = fresh_services(f"sqlite:///{instance / 'relay.sqlite3'}", redis_url, sandbox, instance)
        app = make_app(env)
        try:
            assert post_event(app.test_client(), load_fixture("reward_unlocked")).status_code == 200
            run_pending(app)
            assert {d.status for d in deliveries(app)} == {"succeeded"}
        finally:
            Runtime.of(app).close()
        assert len(sandbox.snapshot()["spruce"]["contacts"]) == 1
    finally:
        sandbox.stop()


# relay dev start-ups and other terminals' commands: a loaded machine needs more than
# the suite's 120 s; every wait inside is bounded on its own.
@pytest.mark.timeout(300)
def test_fresh_refuses_without_a_terminal_and_with_yes_empties_the_store_and_the_sandbox(tmp_path, redis_url):
    instance, args = tmp_path / "instance", dev_ports()
    left_by_a_run(instance, redis_url)

    refused = run_relay(dev_env(instance), "dev", *args, "--fresh")  # no terminal to ask, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert [e["type"] for e in relay_events(dev_env(instance))] == ["reward_unlocked"]

    with relay_dev(tmp_path, instance, [*args, "--fresh", "--yes"], "fresh") as dev:
        assert "Started fresh" in dev.shown() and "Note:" not in dev.shown()
        assert relay_events(sourced(instance)) == []
        assert dev.sandbox_state()["spruce"]["contacts"] == []
        assert dev.stop() == 0
