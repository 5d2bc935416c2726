"""Alerts (operations.alerts decides, workers.alerts sends): the evaluator's transitions against
real Redis and the store (opened once, no repeat within RELAY_ALERT_REPEAT, a repeat after it,
resolved when it ends, a rising budget at once, what cannot be read kept as it was); the sinks
over loopback HTTP (a Standard Webhooks receiver, a Slack stand-in) and Sentry, sent by a real
Celery worker: each alert once per window, the signature valid, no personal value in any body
even where a stored error quotes one; a failing sink retried while another is served; `relay
doctor --send-test-alert`; beat's entry; the settings."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from celery.contrib.testing.worker import start_worker
from standardwebhooks.webhooks import Webhook

import workers.alerts  # noqa: F401  (the send task, registered for the worker)
from operations import destinations
from operations.alerts import (
    ALERT_CHECKS,
    BACKLOG_AGE,
    BREAKER,
    DAILY_BUDGET,
    FAILURE_GROUP,
    HELD,
    PARKED,
    SWEEP,
    AlertCheck,
    evaluate,
    evaluate_and_publish,
)
from operations.audit import Actor
from relay.config import ConfigError, load_config
from relay.models import Delivery, DeliveryAttempt, utcnow
from relay.queue import CATCH_UP_QUEUE, EVALUATE_ALERTS_TASK
from relay.runtime import Runtime
from schemas.personal import personal_strings
from testbed.alert_sinks import WEBHOOK_SECRET, RecordingSink, sentry_captured
from testbed.apps import TOKEN, deliveries, make_due, post_event, run_pending
from testbed.console import CONSOLE_KEY
from testbed.drills.traffic import referral_event
from testbed.examples import load_fixture
from testbed.net import served
from testbed.privacy import leaked
from testbed.reserves import RESERVES, park_spruce
from testbed.waiting import wait_for
from web.cli import main
from workers.alerts import publish
from workers.sweep import LAST_SWEPT

PG = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
# For what reads Redis only (the breaker).
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PUBLIC_URL = "https://relay.example.com"
MINUTE = timedelta(minutes=1)


def only(*types: str) -> list[AlertCheck]:
    return [check for check in ALERT_CHECKS if check.type in types]


def breaker_of(app, destination: str):
    runtime = Runtime.of(app)
    return runtime.config.destinations[destination].client(runtime).guard.breaker


def trip(breaker) -> None:
    for _ in range(breaker.threshold):
        breaker.failure()
    assert breaker.state() == "open"


def close(breaker) -> None:
    """A breaker closes on the success of the probe after its cool-down."""
    assert breaker.cooldown_s <= 1
    time.sleep(breaker.cooldown_s + 0.05)
    breaker.success()
    assert breaker.state() == "closed"


def unlock(n: int) -> dict:
    payload = load_fixture("reward_unlocked")
    payload["subscriber"].update(id=f"sub_alert{n}", email=f"alert.person{n}@example.com")
    return payload


def states(alerts) -> list[tuple[str, str, str]]:
    return [(alert.type, alert.status, alert.subject) for alert in alerts]


def state_of(alerts, alert_type: str):
    [alert] = [alert for alert in alerts if alert.type == alert_type]
    return alert


@SQLITE
def test_a_condition_alerts_when_it_starts_again_after_the_window_and_when_it_ends(relay_app):
    app = relay_app(RELAY_ALERT_SLACK_URL="http://127.0.0.1:9/slack", RELAY_BREAKER_COOLDOWN="0.2s")
    runtime, breaker, checks = Runtime.of(app), breaker_of(app, "spruce"), only(BREAKER)
    t0 = utcnow()
    assert evaluate(runtime, t0, checks) == []

    trip(breaker)
    [opened] = evaluate(runtime, t0, checks)
    assert states([opened]) == [(BREAKER, "opened", "spruce")]
    state = opened.facts["breaker"]  # half-open once its cool-down is over: calls still wait
    assert opened.facts == {"destination": "spruce", "breaker": state} and state in ("open", "half-open")
    assert opened.summary == f"Spruce: circuit breaker {state}, Relay stopped calling it"
    assert evaluate(runtime, t0, checks) == [] == evaluate(runtime, t0 + 59 * MINUTE, checks)
    [repeat] = evaluate(runtime, t0 + 61 * MINUTE, checks)
    assert states([repeat]) == [(BREAKER, "repeat", "spruce")] and repeat.id != opened.id
    assert repeat.since == opened.since
    assert evaluate(runtime, t0 + 62 * MINUTE, checks) == []

    # What a check cannot read stays as it was: neither resolved nor repeated.
    def unreadable(_):
        raise ConnectionError("away")

    close(breaker)
    assert evaluate(runtime, t0 + 3 * 60 * MINUTE, [AlertCheck(BREAKER, unreadable)]) == []
    [resolved] = evaluate(runtime, t0 + 3 * 60 * MINUTE, checks)
    assert states([resolved]) == [(BREAKER, "resolved", "spruce")]
    assert resolved.summary == "Spruce: circuit breaker closed, calls resume"
    assert resolved.facts["lasted_s"] == 3 * 3600 and resolved.since == opened.since
    assert evaluate(runtime, t0 + 3 * 60 * MINUTE, checks) == []

    # Flapping: opened again within an hour of its last opening, it stays quiet (its end too),
    # and is announced once that hour is over if it still holds.
    t1 = t0 + 4 * 60 * MINUTE
    trip(breaker)
    assert states(evaluate(runtime, t1, checks)) == [(BREAKER, "opened", "spruce")]
    close(breaker)
    assert states(evaluate(runtime, t1 + 5 * MINUTE, checks)) == [(BREAKER, "resolved", "spruce")]
    trip(breaker)
    assert evaluate(runtime, t1 + 10 * MINUTE, checks) == []
    close(breaker)
    assert evaluate(runtime, t1 + 15 * MINUTE, checks) == []
    trip(breaker)
    assert evaluate(runtime, t1 + 20 * MINUTE, checks) == []
    assert states(evaluate(runtime, t1 + 61 * MINUTE, checks)) == [(BREAKER, "opened", "spruce")]


@PG
def test_a_hold_alerts_once_without_its_reason_and_its_resume_resolves_it_with_no_backlog_alert(relay_app, sandbox):
    app = relay_app(RELAY_ALERT_SLACK_URL="http://127.0.0.1:9/slack", RELAY_ALERT_BACKLOG_AGE="1m")
    runtime, checks, t0 = Runtime.of(app), only(HELD, BACKLOG_AGE), utcnow()
    operator = Actor("lead@clinic.example", "cli")
    destinations.hold(runtime, "spruce", reason="Spruce support is repairing our org", actor=operator)
    assert post_event(app.test_client(), unlock(1)).status_code == 200
    run_pending(app)  # Sprig's delivery goes; Spruce's waits
    assert {d.destination: d.status for d in deliveries(app)} == {"sprig": "succeeded", "spruce": "pending"}
    # Spruce's delivery has waited an hour: because of the hold, which the held alert says.
    [opened] = evaluate(runtime, t0 + 60 * MINUTE, checks)
    assert states([opened]) == [(HELD, "opened", "spruce")]
    assert "repairing" not in json.dumps(opened.facts) + opened.summary and operator.name not in opened.summary
    assert evaluate(runtime, t0 + 61 * MINUTE, checks) == []
    destinations.resume(runtime, "spruce", actor=operator)
    assert states(evaluate(runtime, t0 + 62 * MINUTE, only(HELD))) == [(HELD, "resolved", "spruce")]


@PG
def test_parking_alerts_once_with_counts_and_lanes_only_and_the_day_turning_over_resolves_it(relay_app, sandbox):
    webhook = RecordingSink()
    with served(webhook) as webhook_url:
        app = relay_app(RELAY_ALERT_WEBHOOK_URL=webhook_url, RELAY_ALERT_WEBHOOK_SECRET=WEBHOOK_SECRET,
                        RELAY_PUBLIC_URL=PUBLIC_URL, RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY, RELAY_PARK_PROBE="1s",
                        **RESERVES)
        runtime, checks, celery_app = Runtime.of(app), only(PARKED), app.extensions["celery"]
        park_spruce(app, sandbox)
        with running_worker(app), app.app_context():
            [opened] = evaluate(runtime, checks=checks)
            publish(celery_app, [opened], runtime.config.alert_sinks)
            assert webhook.wait_for_taken(1)
            assert evaluate(runtime, utcnow() + 59 * MINUTE, checks) == []  # within the window: once
            [repeat] = evaluate(runtime, utcnow() + 61 * MINUTE, checks)
            operator = Actor("lead@clinic.example", "cli")
            destinations.hold(runtime, "spruce", reason=None, actor=operator)
            assert evaluate(runtime, utcnow() + 125 * MINUTE, checks) == []  # held: neither repeated nor resolved
            destinations.resume(runtime, "spruce", actor=operator)

            sandbox.configure(rate_limit={"spruce": {"daily_limit": 1000}})  # a new day, with room
            time.sleep(1.1)  # RELAY_PARK_PROBE: the next parked delivery's first call reads the new day
            make_due(app)
            run_pending(app)  # beside the running worker, which may have one of them in flight
            assert wait_for(lambda: {d.status for d in deliveries(app)} == {"succeeded"}, timeout=30, interval=0.2)
            [resolved] = evaluate(runtime, utcnow() + 126 * MINUTE, checks)
            publish(celery_app, [resolved], runtime.config.alert_sinks)
            assert webhook.wait_for_taken(2)
        metrics = app.test_client().get("/metrics").get_data(as_text=True)

    assert states([opened, repeat, resolved]) == [(PARKED, "opened", "spruce"), (PARKED, "repeat", "spruce"),
                                                  (PARKED, "resolved", "spruce")]
    assert opened.facts == {"destination": "spruce", "parked": 4,
                            "parked_by_lane": {"live": 2, "retry": 1, "catch-up": 1}}
    assert opened.summary == (
        "Spruce: 4 deliveries parked by a reserve (live 2, retry 1, catch-up 1): the vendor's window is down to "
        "what is kept for the organization's other tools; they wait, spending no attempt")
    assert resolved.summary == "Spruce: unparked, no delivery waits for a reserve"
    assert resolved.console_url == PUBLIC_URL + "/console/"
    sent = [post.json["data"] for post in webhook.posted]
    assert [(d["type"], d["status"]) for d in sent] == [(PARKED, "opened"), (PARKED, "resolved")]
    everything = "\n".join(post.body.decode() for post in webhook.posted)
    personal = set().union(*(personal_strings(referral_event(n)) for n in range(14)))
    assert personal and not sorted(value for value in personal if leaked(value, everything))
    assert "remaining at its" not in everything  # the engine's reason stays in Relay: counts and lanes only
    assert 'relay_alerts_sent_total{sink="webhook",status="opened",type="parked"} 1.0' in metrics
    assert 'relay_alerts_sent_total{sink="webhook",status="resolved",type="parked"} 1.0' in metrics


def state_the_budget(app, delivery_id: int, remaining: int, limit: int = 1000) -> None:
    """A finished attempt whose answer stated Spruce's daily limit and what is left of it."""
    now = utcnow()
    with Runtime.of(app).session() as session:
        session.add(DeliveryAttempt(
            delivery_id=delivery_id, attempt=1, started_at=now, finished_at=now, outcome="succeeded",
            vendor_status=200, duration_ms=5, rate_limits={"daily_limit": limit, "daily_remaining": remaining}))
        session.commit()


@PG
def test_the_daily_budget_alerts_at_50_80_90_and_100_percent_each_at_once(relay_app):
    app = relay_app(RELAY_ALERT_SLACK_URL="http://127.0.0.1:9/slack")
    runtime, checks = Runtime.of(app), only(DAILY_BUDGET)
    assert post_event(app.test_client(), unlock(1)).status_code == 200
    spruce = next(d.id for d in deliveries(app) if d.destination == "spruce")
    t0 = utcnow()
    assert evaluate(runtime, t0, checks) == []  # no daily figure stated yet
    state_the_budget(app, spruce, remaining=550)
    assert evaluate(runtime, t0, checks) == []  # 45%

    state_the_budget(app, spruce, remaining=450)
    [half] = evaluate(runtime, t0, checks)
    assert (half.status, half.level, half.facts["percent_used"]) == ("opened", 50, 55)
    assert half.summary == "Spruce: 55% of the vendor's daily API limit used (450 of 1000 calls left)"
    state_the_budget(app, spruce, remaining=150)
    [rise] = evaluate(runtime, t0 + MINUTE, checks)
    assert (rise.status, rise.level) == ("opened", 80)
    state_the_budget(app, spruce, remaining=140)
    assert evaluate(runtime, t0 + 2 * MINUTE, checks) == []  # 86%: still 80
    state_the_budget(app, spruce, remaining=300)
    assert evaluate(runtime, t0 + 3 * MINUTE, checks) == []  # down to 70%: no alert for that
    [repeat] = evaluate(runtime, t0 + 62 * MINUTE, checks)
    assert (repeat.status, repeat.level, repeat.facts["percent_used"]) == ("repeat", 50, 70)
    state_the_budget(app, spruce, remaining=0)
    [spent] = evaluate(runtime, t0 + 63 * MINUTE, checks)
    assert (spent.status, spent.level) == ("opened", 100)
    state_the_budget(app, spruce, remaining=1000)  # the vendor's day turned over
    [over] = evaluate(runtime, t0 + 64 * MINUTE, checks)
    assert (over.status, over.type, over.subject) == ("resolved", DAILY_BUDGET, "spruce")
    assert over.summary == "Spruce: under 50% of the vendor's daily API limit used"


def set_up_trouble(app, sandbox) -> list[dict]:
    """Spruce's breaker open, 86% of its daily limit used, a group of failed deliveries (whose
    stored error quotes the person's email, as an unscrubbed vendor message might), and a live
    delivery per destination waiting for 20 minutes. The payloads posted."""
    # One new subscriber costs 5 Spruce calls (search, create, conversation, note, …) and the
    # refused one 1: 6 of 7 is 86%.
    sandbox.configure(rate_limit={"spruce": {"daily_limit": 7}})
    payloads = [unlock(1), unlock(2), unlock(3)]
    assert post_event(app.test_client(), payloads[0]).status_code == 200
    run_pending(app)
    sandbox.configure(faults=[{"vendor": "spruce", "status": 400, "times": None, "method": "POST",
                               "path_prefix": "/contacts"}])
    assert post_event(app.test_client(), payloads[1]).status_code == 200
    run_pending(app)
    assert post_event(app.test_client(), payloads[2]).status_code == 200
    with Runtime.of(app).session() as session:
        session.execute(sa.update(Delivery).where(Delivery.status == "failed").values(
            last_error=Delivery.last_error + f" (no contact for {payloads[1]['subscriber']['email']})"))
        session.execute(sa.update(Delivery).where(Delivery.status == "pending").values(
            created_at=utcnow() - 20 * MINUTE, next_attempt_at=utcnow() + 60 * MINUTE))  # the worker leaves them
        session.commit()
    Runtime.of(app).redis.set(LAST_SWEPT, f"{time.time():.3f}")
    assert [d.status for d in deliveries(app)] == ["succeeded", "succeeded", "succeeded", "failed", "pending",
                                                    "pending"]
    trip(breaker_of(app, "spruce"))
    return payloads


def running_worker(app):
    return start_worker(app.extensions["celery"], pool="threads", concurrency=4, perform_ping_check=False,
                        shutdown_timeout=10, loglevel="WARNING")


@PG
def test_the_sinks_get_each_alert_once_per_window_signed_and_without_personal_data(relay_app, sandbox):
    webhook, slack = RecordingSink(), RecordingSink()
    with served(webhook) as webhook_url, served(slack) as slack_url:
        app = relay_app(RELAY_ALERT_WEBHOOK_URL=webhook_url, RELAY_ALERT_WEBHOOK_SECRET=WEBHOOK_SECRET,
                        RELAY_ALERT_SLACK_URL=slack_url, RELAY_PUBLIC_URL=PUBLIC_URL,
                        RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY, RELAY_BREAKER_COOLDOWN="0.2s",
                        SENTRY_DSN="http://key@127.0.0.1:9/1")
        payloads = set_up_trouble(app, sandbox)
        runtime, celery_app = Runtime.of(app), app.extensions["celery"]
        with sentry_captured(runtime.config) as sentry, running_worker(app), app.app_context():
            started = time.monotonic()
            alerts = evaluate_and_publish(runtime, celery_app)
            took = time.monotonic() - started
            assert took < 2, f"the evaluation took {took:.1f} s"  # it sends nothing itself
            expected = sorted([(BREAKER, "opened", "spruce"), (DAILY_BUDGET, "opened", "spruce"),
                               (BACKLOG_AGE, "opened", "sprig"), (BACKLOG_AGE, "opened", "spruce"),
                               (FAILURE_GROUP, "opened", state_of(alerts, FAILURE_GROUP).subject)])
            assert sorted(states(alerts)) == expected
            assert webhook.wait_for_taken(5) and slack.wait_for_taken(5)
            assert evaluate_and_publish(runtime, celery_app) == []  # within the window: nothing

            close(breaker_of(app, "spruce"))
            assert states(evaluate_and_publish(runtime, celery_app)) == [(BREAKER, "resolved", "spruce")]
            assert webhook.wait_for_taken(6) and slack.wait_for_taken(6)
            time.sleep(0.3)  # nothing more arrives
        sent = [post.json for post in webhook.posted]
        lines = [post.json["text"] for post in slack.posted]
        sentry_sent = "\n".join(sentry.sent)

    assert len(webhook.posted) == 6 == len(slack.posted)
    assert sorted((body["data"]["type"], body["data"]["status"], body["data"]["subject"]) for body in sent) == sorted(
        [*expected, (BREAKER, "resolved", "spruce")])
    verifier = Webhook(WEBHOOK_SECRET)
    for post in webhook.posted:
        assert verifier.verify(post.body, post.headers) == post.json
        assert post.headers["webhook-id"] == post.json["data"]["id"]
    tampered = webhook.posted[0]
    with pytest.raises(Exception, match="No matching signature"):
        verifier.verify(tampered.body + b" ", tampered.headers)

    by_type = {(body["data"]["type"], body["data"]["status"]): body for body in sent}
    budget = by_type[(DAILY_BUDGET, "opened")]
    assert budget["type"] == "relay.alert.daily_budget.opened"
    assert (budget["data"]["level"], budget["data"]["facts"]["daily_limit"]) == (80, 7)
    assert budget["data"]["facts"]["daily_remaining"] == 1 and budget["data"]["console_url"] == PUBLIC_URL + "/console/"
    group = by_type[(FAILURE_GROUP, "opened")]["data"]
    failed = next(d for d in deliveries(app) if d.status == "failed")
    assert group["facts"] | {"first_failed_at": None, "last_failed_at": None} == {
        "destination": "spruce", "status_code": 400, "kind": "refused", "failures": 1, "newest_event_id": failed.event_id,
        "vendor_request_id": failed.last_error.split("[req ")[1].split("]")[0],
        "first_failed_at": None, "last_failed_at": None}
    assert group["summary"] == "Spruce: 1 delivery failed in the last hour (refused by the vendor, HTTP 400)"
    assert group["console_url"] == PUBLIC_URL + "/console/failures?days=1"

    assert any(line.startswith(":red_circle: Relay alert: Spruce: circuit breaker ") for line in lines)
    assert (":large_green_circle: Relay resolved: Spruce: circuit breaker closed, calls resume "
            f"<{PUBLIC_URL}/console/|open the console>") in lines
    assert sum('"Relay alert: ' in envelope for envelope in sentry.sent) == 6

    everything = "\n".join([*(post.body.decode() for post in webhook.posted), *lines, sentry_sent])
    personal = set().union(*(personal_strings(payload) for payload in payloads))
    assert personal and not sorted(value for value in personal if leaked(value, everything))
    # Not the error's words either: a vendor's message may quote anything.
    assert "BAD_PARAMETER" not in everything and "no contact for" not in everything


@PG
def test_a_failing_sink_is_retried_and_holds_up_no_other(relay_app):
    webhook, slack = RecordingSink(answers=[503, 503], delay_s=0.5), RecordingSink()
    with served(webhook) as webhook_url, served(slack) as slack_url:
        app = relay_app(RELAY_ALERT_WEBHOOK_URL=webhook_url, RELAY_ALERT_WEBHOOK_SECRET=WEBHOOK_SECRET,
                        RELAY_ALERT_SLACK_URL=slack_url)
        runtime = Runtime.of(app)
        with running_worker(app), app.app_context():
            # A new deploy: no sweep has finished yet.
            started = time.monotonic()
            alerts = evaluate_and_publish(runtime, app.extensions["celery"])
            assert time.monotonic() - started < 1  # a slow sink is no concern of the evaluation's
            assert states(alerts) == [(SWEEP, "opened", "relay")]
            assert slack.wait_for_taken(1, timeout=5) and webhook.wait_for_taken(1, timeout=15)
            time.sleep(0.3)
        metrics = app.test_client().get("/metrics").get_data(as_text=True)

    assert [post.answered for post in webhook.posted] == [503, 503, 200]
    assert slack.posted[0].at < webhook.posted[0].at  # Slack waited neither for the webhook's answers nor its retries
    assert len({post.headers["webhook-id"] for post in webhook.posted}) == 1  # one message, tried three times
    assert [post.json["text"] for post in slack.posted] == [
        ":red_circle: Relay alert: The sweep is not running: no sweep has finished since Redis was last emptied"]
    assert 'relay_alerts_sent_total{sink="webhook",status="opened",type="sweep"} 1.0' in metrics
    assert 'relay_alerts_sent_total{sink="slack",status="opened",type="sweep"} 1.0' in metrics
    assert 'relay_alert_send_failures_total{sink="webhook"} 2.0' in metrics


@PG
def test_doctor_sends_a_test_alert_to_each_sink_on_request(relay_app):
    webhook, slack = RecordingSink(), RecordingSink(answers=[404])
    with served(webhook) as webhook_url, served(slack) as slack_url:
        app = relay_app(RELAY_ALERT_WEBHOOK_URL=webhook_url, RELAY_ALERT_WEBHOOK_SECRET=WEBHOOK_SECRET,
                        RELAY_ALERT_SLACK_URL=slack_url)
        plain = app.test_cli_runner().invoke(main, ["doctor", "--json"])
        result = app.test_cli_runner().invoke(main, ["doctor", "--json", "--send-test-alert"])
    assert "alert" not in " ".join(check["name"] for check in json.loads(plain.output)["checks"])
    assert result.exit_code == 1, result.output
    checks = {check["name"]: check for check in json.loads(result.output)["checks"]}
    [post] = webhook.posted
    assert (checks["alert webhook"]["status"], checks["alert webhook"]["detail"]) == (
        "ok", f"a test alert was taken (HTTP 200, {post.json['data']['id']})")
    assert Webhook(WEBHOOK_SECRET).verify(post.body, post.headers)["type"] == "relay.alert.test.test"
    assert (checks["alert Slack"]["status"], checks["alert Slack"]["detail"]) == (
        "failed", "the test alert was not taken: HTTP 404")
    assert "RELAY_ALERT_SLACK_URL" in checks["alert Slack"]["fix"] and slack_url not in result.output
    assert (checks["alert Sentry"]["status"], checks["alert Sentry"]["detail"]) == (
        "not_configured", "SENTRY_DSN is not set")
    assert list(checks)[-3:] == ["alert webhook", "alert Slack", "alert Sentry"]
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'relay_alerts_sent_total{sink="webhook",status="test",type="test"} 1.0' in metrics
    assert 'sink="slack"' not in metrics  # not taken: not counted as sent


@PG
def test_beat_has_the_alerts_evaluated_on_the_catch_up_queue_when_a_sink_is_set(relay_app):
    assert "relay-alerts" not in relay_app().extensions["celery"].conf.beat_schedule
    schedule = relay_app(RELAY_ALERT_SLACK_URL="https://hooks.slack.test/x").extensions["celery"].conf.beat_schedule
    entry = schedule["relay-alerts"]
    assert (entry["task"], entry["options"]) == (EVALUATE_ALERTS_TASK, {"queue": CATCH_UP_QUEUE, "expires": 30.0})


def alert_config(**env: str):
    return load_config({"SPARKLOOP_WEBHOOK_TOKEN": TOKEN, **env}, instance_path="/tmp/relay-instance")


def test_the_alert_settings_are_checked_and_no_secret_is_repeated():
    config = alert_config(RELAY_ALERT_WEBHOOK_URL="https://alerts.example.com/hook?key=k3y",
                          RELAY_ALERT_WEBHOOK_SECRET=WEBHOOK_SECRET)
    assert (config.alert_sinks, config.alert_repeat_s, config.alert_backlog_age_s) == (("webhook",), 3600, 900)
    with pytest.raises(ConfigError, match="RELAY_ALERT_WEBHOOK_SECRET is required with RELAY_ALERT_WEBHOOK_URL"):
        alert_config(RELAY_ALERT_WEBHOOK_URL="https://alerts.example.com/hook")
    for secret in ("whsec_dG9vIHNob3J0", "whsec_" + "A-_b" * 11, "not-base64!"):
        with pytest.raises(ConfigError, match="RELAY_ALERT_WEBHOOK_SECRET must be whsec_") as refused:
            alert_config(RELAY_ALERT_WEBHOOK_SECRET=secret)
        assert secret not in str(refused.value)
    with pytest.raises(ConfigError, match="RELAY_ALERT_SLACK_URL must be a URL") as refused:
        alert_config(RELAY_ALERT_SLACK_URL="hooks.slack.com/services/T0/B0/s3cret")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ConfigError, match="RELAY_ALERT_REPEAT must be at least 1m"):
        alert_config(RELAY_ALERT_REPEAT="10s")
