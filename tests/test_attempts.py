"""The attempt history: each run of a delivery leaves a row, written with the run's end (both
stores, the sandbox over HTTP); `relay events show` lists them; purge and erasure take them
with their delivery; a run that lost its claim writes none; no row holds a payload value."""
from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa

from operations.events import event_detail
from relay.models import DeliveryAttempt, utcnow
from relay.runtime import Runtime
from schemas.personal import personal_strings
from testbed.apps import (
    deliver, deliveries, delivery_to, events, post_event, received_days_ago, run_pending, sandbox_state,
)
from testbed.cli import invoke
from testbed.examples import load_fixture
from testbed.privacy import leaked
from web.cli import main
from workers.spruce.delivery import CONTACT, CONVERSATION, NOTE

NOTE_POST = {"vendor": "spruce", "method": "POST", "path_prefix": "/conversations/t_", "times": 1}


def history(app, destination: str) -> list[dict]:
    """The attempts of the latest event's delivery to `destination`, as event_detail gives them."""
    detail = event_detail(Runtime.of(app), events(app)[-1].id)
    assert detail is not None
    return next(d for d in detail["deliveries"] if d["destination"] == destination)["attempt_history"]


def stored_attempts(app) -> list[DeliveryAttempt]:
    with Runtime.of(app).db.session() as session:
        return list(session.scalars(sa.select(DeliveryAttempt).order_by(DeliveryAttempt.id)))


def spruce_requests(sandbox) -> list[dict]:
    return [r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "spruce"]


def test_a_delivery_that_failed_once_then_succeeded_shows_both_attempts(client, app, sandbox):
    sandbox.configure(faults=[NOTE_POST | {"status": 500}])
    post_event(client, load_fixture("reward_unlocked"))
    spruce_id = delivery_to(app, "spruce").id
    assert deliver(app, spruce_id) == "retried"
    failed_call = spruce_requests(sandbox)[-1]
    run_pending(app)
    assert delivery_to(app, "spruce").status == "succeeded"
    last_call = spruce_requests(sandbox)[-1]

    first, second = history(app, "spruce")
    assert (first["attempt"], first["outcome"], first["vendor_status"]) == (1, "retried", 500)
    assert first["vendor_request_id"] == failed_call["request_id"] and failed_call["status"] == 500
    assert " -> 500" in first["error"] and f"[req {failed_call['request_id']}]" in first["error"]
    # The contact and its note conversation were found or made before the note post failed.
    assert set(first["steps"]) >= {CONTACT, CONVERSATION} and NOTE not in first["steps"]
    assert (second["attempt"], second["outcome"], second["error"]) == (2, "succeeded", None)
    assert second["vendor_status"] == last_call["status"] and 200 <= last_call["status"] < 300
    assert second["vendor_request_id"] == last_call["request_id"]
    assert NOTE in second["steps"] and CONTACT not in second["steps"]
    for attempt in (first, second):
        started, finished = (datetime.fromisoformat(attempt[k]) for k in ("started_at", "finished_at"))
        assert started <= finished <= utcnow()
        assert 0 <= attempt["duration_ms"] <= (finished - started).total_seconds() * 1000 + 1
        # Spruce's s-ratelimit-* headers, as the client read them: numbers, no other header.
        limits = attempt["rate_limits"]
        assert set(limits) <= {"limit", "remaining", "reset_after", "daily_limit", "daily_remaining"}
        assert {"limit", "remaining"} <= set(limits)  # daily ones only when the sandbox sets a daily limit
        assert all(isinstance(value, (int, float)) for value in limits.values())
    assert second["started_at"] >= first["finished_at"]

    [sprig] = history(app, "sprig")  # Sprig answered at once, and states no limits when it is not throttled
    assert (sprig["attempt"], sprig["outcome"], sprig["error"], sprig["rate_limits"]) == (1, "succeeded", None, {})
    assert 200 <= sprig["vendor_status"] < 300


def test_a_deferral_says_why(client, app, sandbox):
    sandbox.configure(faults=[{"vendor": "sprig", "status": 429, "times": 1, "method": "POST",
                               "path_prefix": "/v2/users", "retry_after": 0}])
    post_event(client, load_fixture("reward_unlocked"))
    assert deliver(app, delivery_to(app, "sprig").id) == "deferred"
    run_pending(app)

    deferred, succeeded = history(app, "sprig")
    assert (deferred["outcome"], deferred["vendor_status"]) == ("deferred", 429)
    assert "429" in deferred["error"] and deferred["rate_limits"] == {"reset_after": 0.0}
    assert (succeeded["attempt"], succeeded["outcome"]) == (2, "succeeded")


def test_relay_events_show_lists_the_attempts(client, app, sandbox):
    sandbox.configure(faults=[NOTE_POST | {"status": 503}])
    post_event(client, load_fixture("reward_unlocked"))
    run_pending(app)
    event_id = events(app)[-1].id
    first, second = history(app, "spruce")

    shown = app.test_cli_runner().invoke(main, ["events", "show", str(event_id)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    at = next(n for n, line in enumerate(lines) if "  retried  " in line)
    retried = lines[at]  # one line each, however narrow the terminal; the error below it
    assert retried.split()[0] == "1" and "HTTP 503" in retried and f"req {first['vendor_request_id']}" in retried
    assert f"{first['duration_ms']} ms" in retried and first["error"].startswith(lines[at + 1].strip()[:40])
    succeeded = next(line for line in lines if line.strip().startswith("2 ") and "  succeeded  " in line)
    assert f"HTTP {second['vendor_status']}" in succeeded and f"req {second['vendor_request_id']}" in succeeded
    assert "finished " in succeeded and NOTE in succeeded and "calls left" in succeeded
    assert sum("  succeeded  " in line for line in lines) == 2  # Spruce's second attempt, Sprig's one

    as_json = json.loads(invoke(app, "events", "show", str(event_id), "--json").output)
    spruce = next(d for d in as_json["deliveries"] if d["destination"] == "spruce")
    assert [a["outcome"] for a in spruce["attempt_history"]] == ["retried", "succeeded"]
    assert spruce["attempt_history"] == [first, second]


def test_no_attempt_holds_a_payload_value_even_when_the_vendor_quotes_the_request(client, app, sandbox):
    # Spruce's validator quotes what it was sent (the note: names, the shipping address), on a
    # 500 the run retries after, then on a 400 that fails the delivery.
    quoting = {"vendor": "spruce", "method": "POST", "path_prefix": "/conversations/", "message": "invalid",
               "echo": True}
    sandbox.configure(faults=[quoting | {"status": 500, "times": 1}, quoting | {"status": 400, "times": None}])
    payload = load_fixture("reward_redeemed")
    post_event(client, payload)
    run_pending(app)
    assert [a["outcome"] for a in history(app, "spruce")] == ["retried", "failed"]

    personal = sorted(personal_strings(payload))
    assert personal
    rows = json.dumps([{c.name: getattr(a, c.name) for c in DeliveryAttempt.__table__.columns}
                       for a in stored_attempts(app)], default=str)
    shown = invoke(app, "events", "show", str(events(app)[-1].id)).output
    for text, where in ((rows, "the attempts' rows"), (shown, "relay events show")):
        assert "<redacted>" in text, where  # the vendor did quote them
        assert not [value for value in personal if leaked(value, text)], where


def delivered_with_attempts(client, app, sandbox, payload: dict) -> None:
    """Delivered, Spruce at the second attempt (its first call met a 500): three attempts."""
    sandbox.configure(faults=[{"vendor": "spruce", "method": "POST", "path_prefix": "/contacts", "times": 1,
                               "status": 500}])
    post_event(client, payload)
    before = len(stored_attempts(app))
    run_pending(app)
    assert {d.status for d in deliveries(app)} == {"succeeded"}
    assert len(stored_attempts(app)) - before == 3


def test_a_purge_takes_the_attempts_with_their_deliveries(client, app, sandbox):
    delivered_with_attempts(client, app, sandbox, load_fixture("reward_unlocked"))
    kept = load_fixture("reward_unlocked")
    kept["subscriber"].update(id="sub_kept", email="kept@example.com")
    post_event(client, kept)
    run_pending(app)
    old, recent = (e.id for e in events(app))
    assert len(stored_attempts(app)) == 3 + 2
    received_days_ago(app, old, 40)

    result = invoke(app, "events", "purge", "--older-than", "30d", "--yes")

    assert result.exit_code == 0 and "purged 1 " in result.output, result.output
    recent_ids = {d.id for d in deliveries(app)}
    assert {a.delivery_id for a in stored_attempts(app)} == recent_ids and len(stored_attempts(app)) == 2


def test_forgetting_a_subscriber_takes_the_attempts_of_their_deliveries(client, app, sandbox):
    payload = load_fixture("reward_unlocked")
    delivered_with_attempts(client, app, sandbox, payload)
    assert len(stored_attempts(app)) == 3

    result = invoke(app, "subscribers", "forget", payload["subscriber"]["email"], "--yes")

    assert result.exit_code == 0, result.output
    assert events(app) == [] and stored_attempts(app) == []


def test_forgetting_someone_an_event_only_names_redacts_them_from_its_attempts(client, app, sandbox):
    payload = load_fixture("new_referral")  # John Doe's referral, which names John Smith as referrer
    delivered_with_attempts(client, app, sandbox, payload)
    referrer = payload["referrer"]
    # An error that quoted the referrer (as a vendor's could, had the redactor missed it).
    quoted = f"POST /contacts -> 400 BAD_PARAMETER: {referrer['email']} ({referrer['name']}) is invalid"
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(DeliveryAttempt).where(DeliveryAttempt.outcome == "retried").values(error=quoted))
        session.commit()

    result = invoke(app, "subscribers", "forget", referrer["email"], "--yes")

    assert result.exit_code == 0, result.output
    [kept] = [a for a in stored_attempts(app) if a.outcome == "retried"]  # John Doe's event stays
    assert kept.error == "POST /contacts -> 400 BAD_PARAMETER: <redacted> (<redacted>) is invalid"
    assert len(stored_attempts(app)) == 3
