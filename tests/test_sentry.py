"""What reaches Sentry: reports without personal data anywhere in them (message, request,
breadcrumbs, extras, user), and the sweep's cron check-ins."""
from __future__ import annotations

import json
import logging

import pytest
import sentry_sdk
from flask import Blueprint

from relay.runtime import Runtime
from workers import sweep as sweep_module

EMAIL, NAME, STREET, PHONE, TOKEN_VALUE = ("ada.lovelace@example.com", "Ada Lovelace", "12 Analytical Row",
                                           "+1 (555) 010-2345", "tok_5f1e2d3c4b5a")
SECRETS = (EMAIL, "ada.lovelace%40example.com", NAME, STREET, PHONE, TOKEN_VALUE)


def envelopes(sentry) -> list[dict]:
    """Every item Sentry was sent, parsed (an envelope is a header line, then item header and
    item body lines)."""
    items = []
    for envelope in sentry.sent:
        lines = envelope.splitlines()[1:]
        items.extend(json.loads(body) for body in lines[1::2])
    return items


def test_nothing_personal_reaches_sentry_from_a_request_its_logs_or_its_scope(relay_app, sentry):
    app = relay_app()
    app.config.update(TESTING=False, PROPAGATE_EXCEPTIONS=False)
    crashing = Blueprint("crashing", __name__)

    @crashing.post("/crash")
    def crash():
        logging.getLogger("relay.test").warning("looking at %s, %s, %s", EMAIL, PHONE, NAME)
        sentry_sdk.set_user({"email": EMAIL, "username": NAME})
        sentry_sdk.set_extra("payload", {"subscriber": {"email": EMAIL, "name": NAME}, "street": STREET})
        sentry_sdk.set_tag("contact", EMAIL)
        raise KeyError(f"{EMAIL} at {STREET}")

    app.register_blueprint(crashing)
    response = app.test_client().post(
        f"/crash?email={EMAIL}&token={TOKEN_VALUE}", json={"email": EMAIL, "name": NAME, "address": STREET},
        headers={"Authorization": f"Bearer {TOKEN_VALUE}", "SparkLoop-Token": TOKEN_VALUE, "X-Note": PHONE})
    assert response.status_code == 500
    sentry_sdk.flush()

    [event] = [item for item in envelopes(sentry) if "exception" in item]
    assert event["exception"]["values"][-1]["type"] == "KeyError"  # the report is there, grouped by type
    assert event["tags"]["path"] == "/crash" and event["request"]["method"] == "POST"
    assert any(crumb.get("category") == "relay.test" for crumb in event["breadcrumbs"]["values"])
    sent = "\n".join(sentry.sent)
    for value in SECRETS:
        assert value not in sent, f"{value!r} reached Sentry"


def test_the_sweep_checks_in_once_a_minute_and_reports_its_failure(app, sentry, monkeypatch):
    Runtime.of(app).redis.delete(sweep_module.CHECKED_IN)
    with app.app_context():
        for _ in range(3):  # every 10 s in production: one check-in for the minute
            sweep_module.sweep_and_check_in(Runtime.of(app))
    check_ins = [item for item in envelopes(sentry) if item.get("type") == "check_in"]
    assert [(c["monitor_slug"], c["status"]) for c in check_ins] == [("relay-sweep", "ok")]
    assert check_ins[0]["monitor_config"]["schedule"] == {"type": "interval", "value": 1, "unit": "minute"}

    def broken(_runtime, now=None):
        raise ConnectionError("store away")

    monkeypatch.setattr(sweep_module, "sweep", broken)
    with app.app_context(), pytest.raises(ConnectionError):
        sweep_module.sweep_and_check_in(Runtime.of(app))
    statuses = [item["status"] for item in envelopes(sentry) if item.get("type") == "check_in"]
    assert statuses == ["ok", "error"]


def test_events_still_pending_at_exit_are_announced_in_one_log_line(tmp_path):
    """Sentry's own notice is three plain-text lines on stderr, which would break a JSON log."""
    import socket
    import subprocess
    import sys

    silent = socket.socket()  # accepts, never answers: the event stays pending until exit
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    child = f"""
import sentry_sdk
from relay.config import load_config
from relay.observability import configure_logging, init_sentry
configure_logging("json")
init_sentry(load_config({{"SENTRY_DSN": "http://key@127.0.0.1:{silent.getsockname()[1]}/1"}}, instance_path={str(tmp_path)!r}))
sentry_sdk.capture_message("a report")
"""
    try:
        # A child that imports Relay and Sentry: over 30 s was seen under the suite's own load.
        done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=90)
    finally:
        silent.close()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 0 and lines, done.stderr
    parsed = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert any("pending Sentry events" in line["message"] for line in parsed), parsed
