"""`relay dev`, the README's first command: on embedded defaults, a posted example is delivered
to the sandbox, and the settings file it writes lets other `relay` commands reach the sandbox;
its terminal shows one line per webhook and per delivery outcome, Celery logs to a file under
instance/, and Ctrl-C stops everything."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pythonjsonlogger.json import JsonFormatter

from tests.conftest import leaked, load_fixture, post_event, run_pending, wait_for
from relay.config import DEV_WEBHOOK_TOKEN
from relay.observability import JSON_FIELDS, JSON_RENAMES
from schemas.personal import personal_strings
from web.cli.dev import SAMPLE
from web.cli.live import LiveLines, live_line, record_from_json

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


# --- watching it live ------------------------------------------------------------------------

LIVE_LINE = re.compile(r"^\d\d:\d\d:\d\d  ")


@pytest.fixture
def live_lines():
    """The lines `relay dev` would print for this process's webhook and delivery records, and
    those records as the worker's JSON log lines would carry them."""
    lines, records = [], []
    handler = LiveLines(lines.append)
    keep = logging.Handler(logging.INFO)
    keep.emit = records.append
    loggers = [logging.getLogger(name) for name in ("relay.webhooks", "relay.delivery")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.addHandler(keep)
    yield lines, records
    for logger in loggers:
        logger.removeHandler(handler)
        logger.removeHandler(keep)


def test_each_webhook_and_delivery_outcome_is_one_readable_line(app, sandbox, live_lines):
    lines, _ = live_lines
    payload = load_fixture("reward_redeemed")
    client = app.test_client()
    sandbox.configure(faults=[{"vendor": "spruce", "status": 503, "times": 1, "message": "down for maintenance"}])
    assert post_event(client, payload).status_code == 200
    assert post_event(client, payload).status_code == 200  # SparkLoop sent it twice
    assert post_event(client, {"type": "reward_unlocked"}).status_code == 400
    assert post_event(client, payload, token="wrong").status_code == 401
    run_pending(app)

    assert all(LIVE_LINE.match(line) for line in lines), lines
    shown = [line[10:] for line in lines]
    assert shown[:2] == ["webhook  reward_redeemed  event 1  accepted", "webhook  reward_redeemed  event 1  duplicate"]
    # The invalid payload is stored too, under the next id PostgreSQL's sequence hands out.
    assert re.fullmatch(r"webhook  reward_unlocked  event \d+  invalid \(400\)", shown[2])
    assert shown[3] == "webhook  unknown  no event  unauthorized (401)"
    assert "sprig  event 1  delivered (202)" in shown
    [retry] = [line for line in shown if line.startswith("spruce  event 1  will retry (503) in ")]
    assert "down for maintenance" in retry
    assert shown[-1] == "spruce  event 1  delivered (200)"
    assert len(shown) == 7
    text = "\n".join(lines)
    assert not [value for value in personal_strings(payload) if leaked(value, text)]


def test_the_workers_json_lines_make_the_same_lines(app, sandbox, live_lines):
    lines, records = live_lines
    sandbox.configure(faults=[{"vendor": "sprig", "status": 400, "times": 1, "message": "bad attribute"}])
    assert post_event(app.test_client(), load_fixture("new_referral")).status_code == 200
    run_pending(app)

    as_json = JsonFormatter(JSON_FIELDS, style="{", rename_fields=JSON_RENAMES)
    read_back = [live_line(record_from_json(as_json.format(record))) for record in records]
    assert read_back == lines
    assert any(line.endswith("sprig  event 1  failed (400): Sprig answered 400: bad attribute")
               or "sprig  event 1  failed (400): " in line for line in lines), lines
    assert record_from_json("[2026-12-01 14:02:11,000: WARNING/MainProcess] celery banner") is None


def test_relay_dev_delivers_the_example_shows_live_lines_logs_to_files_and_stops_on_ctrl_c(tmp_path):
    port, sandbox_port = free_port(), free_port()
    instance = tmp_path / "instance"
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURED_ELSEWHERE}
    env["RELAY_INSTANCE_PATH"] = str(instance)
    terminal = tmp_path / "terminal.txt"
    with open(terminal, "wb") as out:
        # Its own process group, as a terminal's foreground job: Ctrl-C signals all of it.
        dev = subprocess.Popen([RELAY, "dev", "--port", str(port), "--sandbox-port", str(sandbox_port)],
                               env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}/webhooks/sparkloop"

            def posted() -> bool:
                try:
                    return httpx.post(url, content=SAMPLE.read_bytes(), timeout=5, headers={
                        "SparkLoop-Token": DEV_WEBHOOK_TOKEN, "Content-Type": "application/json"}).status_code == 200
                except httpx.HTTPError:
                    return False

            assert wait_for(posted, timeout=60, interval=0.5), terminal.read_text()
            assert wait_for(lambda: {"sprig  event 1  delivered (202)", "spruce  event 1  delivered (201)"}
                            <= {line[10:] for line in terminal.read_text().splitlines()},
                            timeout=60, interval=0.5), terminal.read_text()
            assert [e["status"] for e in relay_events(env)] == ["done"]
            state = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/state", timeout=5).json()
            assert "john.doe@email.com" in state["sprig"]["users"]
            assert len(state["spruce"]["contacts"]) == 1
            settings = (instance / "dev.env").read_text()
            assert f"export SPARKLOOP_API_URL=http://127.0.0.1:{sandbox_port}/sparkloop/v2" in settings
            os.killpg(dev.pid, signal.SIGINT)
            assert dev.wait(timeout=40) == 0
            assert wait_for(lambda: not _group_alive(dev.pid), timeout=20, interval=0.2)
        finally:
            if dev.poll() is None or _group_alive(dev.pid):
                os.killpg(dev.pid, signal.SIGKILL)
                dev.wait(timeout=10)

    shown = terminal.read_text()
    assert "webhook  new_referral  event 1  accepted" in shown
    assert shown.rstrip().endswith("relay dev stopped: web app, worker and sandbox")
    banner, _, live = shown.partition("Ctrl-C stops everything.")
    assert live and all(LIVE_LINE.match(line) or line.startswith(("Other relay", "settings:", "  ", "relay dev"))
                        for line in live.strip().splitlines() if line), live
    assert "celery" not in live.lower() and "POST /webhooks" not in live
    worker_log = (instance / "dev-worker.log").read_text()
    assert "celery@" in worker_log and '"logger": "relay.delivery"' in worker_log
    assert "[queues]" in worker_log  # Celery's banner, kept out of the terminal
    assert "POST /webhooks/sparkloop" in (instance / "dev.log").read_text()
    assert "john.doe@email.com" not in shown


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
