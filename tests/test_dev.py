"""`relay dev`, the README's first command: on embedded defaults, a posted example is delivered
to the sandbox, and the settings file it writes lets other `relay` commands reach the sandbox;
its terminal shows one line per webhook and per delivery outcome, Celery logs to a file under
instance/, Ctrl-C stops everything, and a restart keeps the store and the sandbox's records."""
from __future__ import annotations

import json
import logging
import re
import socket
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner
from pythonjsonlogger.json import JsonFormatter

from relay.config import DEV_WEBHOOK_TOKEN
from relay.models import Event
from relay.observability import JSON_FIELDS, JSON_RENAMES
from relay.runtime import Runtime
from schemas.personal import personal_strings
from testbed.apps import events, post_event, run_pending
from testbed.dev_processes import (
    CONFIGURED_ELSEWHERE,
    LIVE_LINE,
    dev_env,
    dev_ports,
    option,
    relay_dev,
    relay_events,
    run_relay,
    sourced,
)
from testbed.examples import load_fixture
from testbed.privacy import leaked
from testbed.waiting import wait_for
from web.cli import main
from web.cli.dev import SAMPLE, plan_dev, stale_links, stale_note
from web.cli.live import LiveLines, live_line, record_from_json
from workers.sweep import LAST_SWEPT

# --- watching it live ------------------------------------------------------------------------


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
    # The words of `relay events list`: a stored event's type and status.
    assert shown[:2] == ["webhook  reward_redeemed  event 1  received",
                         "webhook  reward_redeemed  event 1  duplicate (already received)"]
    # The invalid payload is stored too, under the next id PostgreSQL's sequence hands out.
    assert re.fullmatch(r"webhook  reward_unlocked  event \d+  invalid \(400\)", shown[2])
    assert shown[3] == "webhook  not stored  unauthorized (401)"
    assert "sprig  event 1  delivered (202)" in shown
    [retry] = [line for line in shown if line.startswith("spruce  event 1  will retry (503) in ")]
    assert "down for maintenance" in retry
    assert shown[-1] == "spruce  event 1  delivered (200)"
    assert len(shown) == 7
    text = "\n".join(lines)
    assert not [value for value in personal_strings(payload) if leaked(value, text)]


def test_an_unknown_type_is_shown_as_stored_as_relay_events_list_shows_it(app):
    lines = []
    with app.app_context(), Runtime.of(app).db.session() as session:
        reader = lambda event_id: session.scalar(sa.select(Event.type).where(Event.id == event_id))  # noqa: E731
        handler = LiveLines(lines.append, event_type_of=reader)
        logger = logging.getLogger("relay.webhooks")
        logger.addHandler(handler)
        try:
            client = app.test_client()
            assert post_event(client, {"type": "subscriber_deleted"}).status_code == 200
            assert post_event(client, {"type": "\x1b[2J ann@example.com"}).status_code == 200
        finally:
            logger.removeHandler(handler)
    listed = {e.id: e.type for e in events(app)}
    assert [line[10:] for line in lines] == [
        f"webhook  subscriber_deleted  event {min(listed)}  unhandled",
        f"webhook  unknown  event {max(listed)}  unhandled"]  # no terminal control, no address


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



# relay dev start-ups and other terminals' commands: a loaded machine needs more than
# the suite's 120 s; every wait inside is bounded on its own.
@pytest.mark.timeout(300)
def test_relay_dev_delivers_the_example_and_other_terminals_see_it_through_dev_env(tmp_path):
    """Live lines, log files, Ctrl-C; and `. instance/dev.env` makes doctor, stats, metrics and
    backfill see this run; a second `relay dev` on its ports changes nothing; started again, it
    keeps the store and the sandbox's records (`--fresh`: tests/test_dev_restart.py)."""
    instance, args = tmp_path / "instance", dev_ports()
    with relay_dev(tmp_path, instance, args) as dev:
        settings = (instance / "dev.env").read_text()
        assert f"export SPARKLOOP_API_URL={dev.sandbox_url}/sparkloop/v2" in settings
        assert f"export SPARKLOOP_WEBHOOK_TOKEN={DEV_WEBHOOK_TOKEN}" in settings
        assert f"export REDIS_URL=redis://127.0.0.1:{option(args, '--redis-port')}/0" in settings
        env = sourced(instance)

        # A second `relay dev` on the same ports: refused before a banner or a file.
        second = run_relay(dev_env(instance), "dev", *args)
        assert second.returncode == 2
        assert "--port" in second.stderr and "--sandbox-port" in second.stderr and "Relay is running" not in second.stdout
        assert (instance / "dev.env").read_text() == settings
        assert dev.post(SAMPLE) == 200  # the first one is untouched

        assert wait_for(lambda: {"sprig  event 1  delivered (202)", "spruce  event 1  delivered (201)"} <= dev.live(),
                        timeout=60, interval=0.5), dev.shown()
        state = dev.sandbox_state()
        assert "john.doe@email.com" in state["sprig"]["users"]
        assert len(state["spruce"]["contacts"]) == 1

        # The worker's throttle, seen by another process: the calls it made count in the window.
        # (While beat's first sweep is still to come: the doctor waits for it.)
        stats = json.loads(run_relay(env, "events", "stats", "--json").stdout)
        assert stats["vendors"]["sprig"]["calls_in_window"] >= 1, stats["vendors"]
        assert stats["vendors"]["spruce"]["calls_in_window"] >= 2, stats["vendors"]

        # The worker's counters reach the web's /metrics (flushed once a second).
        def scraped() -> str:
            return httpx.get(f"{dev.url}/metrics", timeout=5).text

        assert wait_for(lambda: 'relay_deliveries_total{destination="sprig",outcome="succeeded"} 1.0' in scraped(),
                        timeout=20, interval=0.5), scraped()

        # `relay doctor`: every check passes or does not apply. The sweep's check passes once
        # beat has swept (10 s after it starts): its mark is read here, not by a doctor a second.
        # Before backfill: a first sweep that finds deliveries enqueued warns of a lost broker.
        sweeps = redis.Redis.from_url(env["REDIS_URL"])
        try:
            assert wait_for(lambda: sweeps.exists(LAST_SWEPT), timeout=60, interval=0.5), dev.shown()
        finally:
            sweeps.close()
        report = {}

        def doctor_passed() -> bool:
            done = run_relay(env, "doctor", "--json")
            report.update(json.loads(done.stdout) if done.stdout.startswith("{") else {"ok": False, "checks": []})
            return report["ok"]

        assert wait_for(doctor_passed, timeout=30, interval=3), report
        assert {c["status"] for c in report["checks"]} <= {"ok", "not_configured", "skipped"}, report

        # Seeding SparkLoop's subscriber list, for `relay backfill`.
        seeded = run_relay(env, "dev", "seed-subscribers", "4", "--sandbox-port", str(option(args, "--sandbox-port")))
        assert seeded.returncode == 0, seeded.stderr
        assert "added 4 subscribers" in seeded.stdout
        assert len(dev.sandbox_state()["sparkloop"]["subscribers"]) == 4
        assert run_relay(env, "backfill", "--since", "1d").returncode == 0
        # Their events delivered before Ctrl-C, which would wait on deliveries under way.
        assert wait_for(lambda: sum(line.startswith("sprig  event ") and " delivered (" in line
                                    for line in dev.live()) == 5, timeout=60, interval=0.5), dev.shown()
        assert dev.stop() == 0

    shown = dev.shown()
    banner, _, live = shown.partition("Ctrl-C stops everything.")
    assert "relay dev seed-subscribers 20" in banner and "_sandbox/sparkloop/subscribers" not in banner
    assert "webhook  new_referral  event 1  received" in live
    assert shown.rstrip().endswith("relay dev stopped: web app, worker and sandbox")
    assert live and all(LIVE_LINE.match(line) or line.startswith("relay dev stopped")
                        for line in live.strip().splitlines() if line), live
    assert "celery" not in live.lower() and "POST /webhooks" not in live
    assert "sweep" not in live  # an empty broker at start is no warning
    worker_log = (instance / "dev-worker.log").read_text()
    assert "celery@" in worker_log and '"logger": "relay.delivery"' in worker_log
    assert "[queues]" in worker_log  # Celery's banner, kept out of the terminal
    assert "POST /webhooks/sparkloop" in (instance / "dev.log").read_text()
    assert "john.doe@email.com" not in shown

    # Restarted: the store and the sandbox's records outlive it (the Spruce ids Relay keeps stay
    # valid, so the banner has no note about them).
    with relay_dev(tmp_path, instance, args, "restarted") as dev:
        assert len(dev.sandbox_state()["spruce"]["contacts"]) == 1
        assert "Note:" not in dev.shown()
        # What the first run stored, backfill's four subscribers included.
        kept = relay_events(sourced(instance))
        assert [e["type"] for e in kept].count("sync_subscriber") == 4 and "new_referral" in {e["type"] for e in kept}
        assert dev.stop() == 0


def test_the_banner_says_when_the_store_links_to_spruce_ids_the_sandbox_lost(app, sandbox):
    assert post_event(app.test_client(), load_fixture("reward_unlocked")).status_code == 200
    run_pending(app)
    assert stale_links(app, sandbox) is None  # the sandbox knows every id the store keeps

    sandbox.reset()  # as a sandbox started without its state file
    stale = stale_links(app, sandbox)
    assert stale_note(stale).startswith("Note: the store remembers vendor ids the sandbox does not know "
                                        "(Spruce contact ids: 1, Spruce note conversation ids: 1)")
    assert "relay dev --fresh" in stale_note(stale)


# --- relay dev refusing, without starting anything -------------------------------------------


def invoke_dev(instance: Path, *args: str, input: str | None = None):
    unset = {name: None for name in CONFIGURED_ELSEWHERE}
    return CliRunner().invoke(main, ["dev", *args], input=input,
                              env=unset | {"RELAY_INSTANCE_PATH": str(instance)})


def test_a_taken_port_is_named_before_anything_is_printed_or_written(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "dev.env").write_text("export KEPT=1\n")
    args = dev_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", option(args, "--sandbox-port")))
        taken.listen()
        result = invoke_dev(instance, *args)
    assert result.exit_code == 2
    assert f"port {option(args, '--sandbox-port')} (--sandbox-port) already in use" in result.output
    assert "Relay is running" not in result.output
    assert (instance / "dev.env").read_text() == "export KEPT=1\n"
    assert sorted(p.name for p in instance.iterdir()) == ["dev.env"]


def test_fresh_asks_first_and_keeps_everything_unless_told_yes(tmp_path, monkeypatch):
    instance = tmp_path / "instance"
    instance.mkdir()
    for name in ("relay.sqlite3", "sandbox-state.json"):
        (instance / name).write_text("kept")

    no_terminal = invoke_dev(instance, *dev_ports(), "--fresh")
    assert no_terminal.exit_code == 2 and "add --yes" in no_terminal.output

    monkeypatch.setattr("web.cli.dev._interactive", lambda: True)
    declined = invoke_dev(instance, *dev_ports(), "--fresh", input="n\n")
    assert declined.exit_code == 1 and "Go on?" in declined.output

    elsewhere = CliRunner().invoke(main, ["dev", *dev_ports(), "--fresh", "--yes"], env={
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere", "RELAY_INSTANCE_PATH": str(instance)})
    assert elsewhere.exit_code == 2 and "DATABASE_URL is set" in elsewhere.output
    assert all((instance / name).read_text() == "kept" for name in ("relay.sqlite3", "sandbox-state.json"))




def test_relay_dev_stops_within_seconds_unless_told_otherwise():
    assert plan_dev(8000, 8025, 8026, environ={}).env["RELAY_SHUTDOWN_GRACE"] == "3s"
    assert plan_dev(8000, 8025, 8026, environ={"RELAY_SHUTDOWN_GRACE": "30s"}).env["RELAY_SHUTDOWN_GRACE"] == "30s"
