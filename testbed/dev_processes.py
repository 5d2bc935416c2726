"""Running `relay dev` as an operator does: a real process group on free loopback ports, its
terminal captured to a file, other terminals' commands with `. instance/dev.env`'s settings, and
Ctrl-C to the whole group. Shared by tests/test_dev.py and tests/test_dev_restart.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from relay.config import DEV_WEBHOOK_TOKEN
from testbed.net import free_port
from testbed.waiting import wait_for

RELAY = str(Path(sys.executable).with_name("relay"))
CONFIGURED_ELSEWHERE = (
    "DATABASE_URL",
    "REDIS_URL",
    "SPRIG_API_KEY",
    "SPRUCE_API_TOKEN",
    "SPARKLOOP_API_KEY",
    "SPARKLOOP_WEBHOOK_TOKEN",
)


def relay_events(env: dict) -> list[dict]:
    listed = subprocess.run([RELAY, "events", "list", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr  # a failed listing is no empty store
    return json.loads(listed.stdout)


LIVE_LINE = re.compile(r"^\d\d:\d\d:\d\d  ")

# --- relay dev itself: real processes --------------------------------------------------------


def dev_ports() -> list[str]:
    return ["--port", str(free_port()), "--sandbox-port", str(free_port()), "--redis-port", str(free_port())]


def option(args: list[str], name: str) -> int:
    return int(args[args.index(name) + 1])


def dev_env(instance: Path) -> dict:
    """This test process's environment without anything that configures Relay elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED_ELSEWHERE}
    return env | {"RELAY_INSTANCE_PATH": str(instance)}


def sourced(instance: Path) -> dict:
    """The environment of another terminal after `. instance/dev.env`."""
    env = dev_env(instance)
    for line in (instance / "dev.env").read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


class RunningDev:
    def __init__(self, process: subprocess.Popen, terminal: Path, args: list[str]):
        self.process, self.terminal, self.args = process, terminal, args

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{option(self.args, '--port')}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{option(self.args, '--sandbox-port')}"

    def shown(self) -> str:
        return self.terminal.read_text()

    def post(self, fixture: Path) -> int:
        return httpx.post(
            f"{self.url}/webhooks/sparkloop",
            content=fixture.read_bytes(),
            timeout=5,
            headers={"SparkLoop-Token": DEV_WEBHOOK_TOKEN, "Content-Type": "application/json"},
        ).status_code

    def live(self) -> set[str]:
        return {line[10:] for line in self.shown().splitlines() if LIVE_LINE.match(line)}

    def sandbox_state(self) -> dict:
        return httpx.get(f"{self.sandbox_url}/_sandbox/state", timeout=5).json()

    def stop(self) -> int:
        """Ctrl-C, as a terminal sends it to its foreground job: the whole process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout=40)
        assert wait_for(lambda: not group_alive(self.process.pid), timeout=20, interval=0.2)
        return code


@contextlib.contextmanager
def relay_dev(tmp_path: Path, instance: Path, args: list[str], name: str = "terminal"):
    """`relay dev ARGS` on INSTANCE in a process group of its own, up and answering; always
    stopped (its group killed if Ctrl-C did not end it)."""
    terminal = tmp_path / f"{name}.txt"
    with open(terminal, "wb") as out:
        process = subprocess.Popen(
            [RELAY, "dev", *args],
            env=dev_env(instance),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    dev = RunningDev(process, terminal, args)
    try:

        def answering() -> bool:
            try:
                return httpx.get(f"{dev.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(lambda: answering() or process.poll() is not None, timeout=60, interval=0.3)
        assert process.poll() is None, dev.shown()
        yield dev
    finally:
        if process.poll() is None or group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def run_relay(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RELAY, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
