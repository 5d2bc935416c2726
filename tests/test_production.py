"""Relay as a PaaS runs it, watched as an operator watches it: gunicorn with gunicorn.conf.py,
a supervised worker and two beats (celery-redbeat) as the Procfile starts them, LOG_FORMAT=json,
METRICS_TOKEN and SENTRY_DSN set (Sentry played by a loopback ingest server). The documented
payloads go in, one delivery fails, and then: every log line is JSON and the delivery lines
carry their ids, /metrics agrees with `relay events list`, Sentry got one event for the failed
delivery and a check-in for the sweep, and nothing personal went anywhere."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sentry_sdk
from prometheus_client.parser import text_string_to_metric_families

from schemas.personal import personal_strings
from testbed.apps import TOKEN
from testbed.examples import FIXTURE_NAMES, load_fixture
from testbed.privacy import leaked
from testbed.waiting import wait_for
from testbed.net import free_port
from testbed.sentry import SentryIngest
from web.cli import main

METRICS_TOKEN = "metrics-secret-for-the-test"
PERSONAL = sorted(value.strip() for name in FIXTURE_NAMES for value in personal_strings(load_fixture(name))
                  if len(value.strip()) >= 4)  # two-letter codes (US, IL) appear in any text


@pytest.fixture
def sentry_ingest():
    ingest = SentryIngest()
    yield ingest
    # This process's app started Sentry too: its client sends what it holds while the ingest
    # still answers (not retried into a closed port after the test), then a disabled one.
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.init()
    ingest.stop()


def json_only(log: Path) -> list[dict]:
    """The log's lines as objects, failing on any line that is not one after the first (the
    start-up banners Celery prints before its first log line are tolerated)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    first = next((n for n, line in enumerate(lines) if line.startswith("{")), len(lines))
    assert first <= 20, f"{log.name} starts with {first} lines that are not JSON"
    parsed = []
    for line in lines[first:]:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line in {log.name}: {line[:300]}")
    return parsed


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_production_run_is_logged_measured_and_reported_without_personal_data(
        drill_for, sandbox, redis_url, sentry_ingest):
    drill = drill_for("relay_drill_production", redis_url.rsplit("/", 1)[0] + "/5")
    app = drill.app(LOG_FORMAT="json", METRICS_TOKEN=METRICS_TOKEN, SENTRY_DSN=sentry_ingest.dsn,
                    SENTRY_ENVIRONMENT="ci", WEB_CONCURRENCY="2")
    # Spruce's validator rejects the first contact it is sent, quoting it: one delivery fails.
    sandbox.configure(faults=[{"vendor": "spruce", "status": 400, "times": 1, "method": "POST", "path": "/contacts",
                               "path_prefix": "", "message": "invalid request", "echo": True}])
    port = free_port()
    web = f"http://127.0.0.1:{port}"
    drill.start_web("web", port)
    drill.start_worker("worker", supervised=True, as_procfile=True, loglevel="INFO")
    drill.start_beat("beat1", as_procfile=True)
    drill.start_beat("beat2", as_procfile=True)

    with httpx.Client(base_url=web, timeout=10) as http:
        for name in FIXTURE_NAMES:
            answer = http.post("/webhooks/sparkloop", json=load_fixture(name), headers={"SparkLoop-Token": TOKEN})
            assert answer.status_code == 200, answer.text
        assert http.post("/webhooks/sparkloop", json={}, headers={"SparkLoop-Token": "wrong"}).status_code == 401
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403

    runner = app.test_cli_runner()

    def listed() -> list[dict]:
        result = runner.invoke(main, ["events", "list", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    assert wait_for(lambda: all(e["status"] in ("done", "failed", "unhandled") for e in listed()), timeout=60), \
        drill.logs()
    assert wait_for(lambda: any(i["_type"] == "check_in" for i in sentry_ingest.items()), timeout=40), drill.logs()
    events = listed()
    outcomes = Counter(d["status"] for e in events for d in e["deliveries"])
    assert outcomes["failed"] == 1 and outcomes["succeeded"] >= 4, outcomes

    # /metrics: the web's counters and the workers', as `relay events list` tells them. Each
    # process adds what it counted to Redis once a second: the scrape waits for the workers'
    # last (the web's were flushed while the deliveries ran).
    by_delivery = Counter((d["destination"], d["status"]) for e in events for d in e["deliveries"])

    def all_finishes_counted(metrics: dict) -> bool:
        finished = sum(v for (name, _), v in metrics.items() if name == "relay_delivery_latency_seconds_count")
        return finished == sum(by_delivery.values())

    assert wait_for(lambda: all_finishes_counted(scrape(web)), timeout=10, interval=0.5), scrape(web)
    metrics = scrape(web)
    webhooks = Counter(("unhandled" if e["status"] == "unhandled" else "accepted", e["type"]) for e in events)
    for (outcome, event_type), count in webhooks.items():
        labels = (("outcome", outcome), ("type", event_type))
        assert metrics[("relay_webhooks_total", labels)] == count, (labels, metrics)
    assert metrics[("relay_webhooks_total", (("outcome", "unauthorized"), ("type", "unknown")))] == 1
    for (destination, status), count in by_delivery.items():
        labels = (("destination", destination), ("outcome", status))
        assert metrics[("relay_deliveries_total", labels)] == count, (labels, metrics)
    assert metrics[("relay_vendor_requests_total", (("status", "400"), ("vendor", "spruce")))] == 1
    assert metrics[("relay_pending_deliveries", ())] == 0
    finished = sum(v for (name, _), v in metrics.items() if name == "relay_delivery_latency_seconds_count")
    assert finished == sum(by_delivery.values())

    # Sentry: one event, for the failed delivery, tagged to be grouped and routed; the sweep's check-in.
    items = sentry_ingest.items()
    [failure] = [i for i in items if i["_type"] == "event"]
    assert failure["tags"]["destination"] == "spruce" and failure["tags"]["error_kind"]
    assert {"event_type", "attempts"} <= set(failure["tags"]) and failure["environment"] == "ci"
    assert failure["fingerprint"][:2] == ["delivery-failed", "spruce"]
    check_in = next(i for i in items if i["_type"] == "check_in")
    assert (check_in["monitor_slug"], check_in["status"]) == ("relay-sweep", "ok")

    # Logs, to the processes' last lines (SIGTERM, as a deploy stops them): JSON only, delivery
    # and webhook lines with their ids, exactly one beat at work.
    drill.stop()
    logs = {path.stem: json_only(path) for path in drill.log_dir.glob("*.log")}
    runs = [line for line in logs["worker"] if "delivery_id" in line and "attempt" in line]
    assert {"event_id", "destination", "event_type", "outcome", "duration_ms", "vendor_status"} <= set(runs[0])
    assert Counter(line["outcome"] for line in runs)["failed"] == 1
    assert all(line["vendor_status"] for line in runs if line["outcome"] in ("succeeded", "failed")), runs
    assert any(line["vendor_request_id"] for line in runs if line["destination"] == "spruce"), runs
    assert any(line.get("outcome") == "accepted" and line.get("event_id") for line in logs["web"])
    assert any("GET /metrics" in line["message"] for line in logs["web"])  # gunicorn's access log, as JSON
    working = [name for name in ("beat1", "beat2") if any("Acquired lock" in line["message"] for line in logs[name])]
    assert len(working) == 1, working
    assert any("shutdown" in line["message"].lower() for line in logs["worker"])

    # Nothing personal in anything sent to Sentry or written to a log.
    sent, written = sentry_ingest.text(), drill.logs()
    for value in PERSONAL:
        assert not leaked(value, sent), f"{value!r} reached Sentry"
        assert not leaked(value, written), f"{value!r} in a log"
