"""`relay dev`, the README's first command: on embedded defaults, a posted example is delivered
to the sandbox, and the settings file it writes lets other `relay` commands reach the sandbox."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import wait_for
from relay.config import DEV_WEBHOOK_TOKEN
from web.cli.dev import SAMPLE

RELAY = str(Path(sys.executable).with_name("relay"))
CONFIGURED_ELSEWHERE = ("DATABASE_URL", "REDIS_URL", "SPRIG_API_KEY", "SPRUCE_API_TOKEN",
                        "SPARKLOOP_API_KEY", "SPARKLOOP_WEBHOOK_TOKEN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relay_events(env: dict) -> list[dict]:
    listed = subprocess.run([RELAY, "events", "list", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
    return json.loads(listed.stdout) if listed.returncode == 0 else []


def test_relay_dev_delivers_the_example_to_the_sandbox(tmp_path):
    port, sandbox_port = free_port(), free_port()
    instance = tmp_path / "instance"
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED_ELSEWHERE}
    env["RELAY_INSTANCE_PATH"] = str(instance)
    log = open(tmp_path / "dev.log", "wb")
    dev = subprocess.Popen([RELAY, "dev", "--port", str(port), "--sandbox-port", str(sandbox_port)],
                           env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/sparkloop"

        def posted() -> bool:
            try:
                return httpx.post(url, content=SAMPLE.read_bytes(), timeout=5, headers={
                    "SparkLoop-Token": DEV_WEBHOOK_TOKEN, "Content-Type": "application/json"}).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(posted, timeout=60, interval=0.5), (tmp_path / "dev.log").read_text()
        assert wait_for(lambda: [e["status"] for e in relay_events(env)] == ["done"], timeout=60,
                        interval=1.0), (tmp_path / "dev.log").read_text()
        state = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/state", timeout=5).json()
        assert "john.doe@email.com" in state["sprig"]["users"]
        assert len(state["spruce"]["contacts"]) == 1
        settings = (instance / "dev.env").read_text()
        assert f"export SPARKLOOP_API_URL=http://127.0.0.1:{sandbox_port}/sparkloop/v2" in settings
    finally:
        dev.send_signal(signal.SIGTERM)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait(timeout=10)
        log.close()
