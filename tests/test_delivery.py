"""Deliveries against the sandbox over HTTP: what lands at Sprig and Spruce, retries, failures."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import sqlalchemy as sa

from relay.models import Delivery, DestinationLink, utcnow
from relay.runtime import Runtime
from schemas.sparkloop import Subscriber
from testbed.apps import TOKEN, deliver, deliveries, delivery_to, events, post_event, run_pending, sandbox_state
from testbed.examples import load_fixture
from web.cli import main
from workers import identity
from workers.classify import MAX_BACKOFF_S, backoff
from workers.sprig.client import sprig_client


def test_new_referral_updates_both_people_in_sprig_and_creates_the_spruce_contact(client, app, sandbox):
    assert post_event(client, load_fixture("new_referral")).status_code == 200
    run_pending(app)

    [event] = events(app)
    assert event.status == "done"
    users = sandbox_state(sandbox)["sprig"]["users"]
    referrer, subscriber = users["john.smith@email.com"], users["john.doe@email.com"]
    assert referrer["attributes"]["sparkloop_total_referrals"] == "4"
    assert referrer["attributes"]["sparkloop_referred"] == "false"
    assert subscriber["attributes"]["sparkloop_referral_code"] == "ada90f39"
    assert [e["event"] for e in subscriber["events"]] == ["sparkloop_new_referral"]
    contacts = sandbox_state(sandbox)["spruce"]["contacts"]
    assert [c["emailAddresses"][0]["value"] for c in contacts] == ["john.doe@email.com"]


def test_reward_redeemed_posts_one_internal_note_with_shipping_details(client, app, sandbox):
    assert post_event(client, load_fixture("reward_redeemed")).status_code == 200
    run_pending(app)

    assert events(app)[0].status == "done"
    spruce = sandbox_state(sandbox)["spruce"]
    [conversation] = spruce["conversations"]
    assert conversation["type"] == "note"
    [note] = spruce["items"][conversation["id"]]
    assert note["isInternalNote"] is True
    assert "T-Shirt XXL" in note["text"] and "Springfield" in note["text"]
    sprig_user = sandbox_state(sandbox)["sprig"]["users"]["john.doe@email.com"]
    assert sprig_user["attributes"]["sparkloop_coupon"] == "9wusha0"


def test_later_notes_reuse_the_contact_and_conversation_without_searching(client, app, sandbox):
    post_event(client, load_fixture("reward_unlocked"))
    run_pending(app)
    searches_before = _count(sandbox, "POST", "/contacts/search")
    post_event(client, load_fixture("reward_redeemed"))
    run_pending(app)

    spruce = sandbox_state(sandbox)["spruce"]
    assert len(spruce["contacts"]) == 1
    [conversation] = spruce["conversations"]
    assert len(spruce["items"][conversation["id"]]) == 2
    assert _count(sandbox, "POST", "/contacts/search") == searches_before


def test_each_destination_remembers_a_subscriber_in_a_row_of_its_own(client, app, sandbox):
    """Sprig's and Spruce's deliveries for one subscriber run at the same time (their locks are per
    subscriber and destination): each saves its own row, so neither overwrites the other's."""
    post_event(client, load_fixture("reward_unlocked"))
    run_pending(app)
    runtime = Runtime.of(app)
    john = Subscriber(id="sub_hjdgc74u", email="john.doe@email.com")
    spruce = identity.recall(runtime, "spruce", john)
    assert set(spruce) == {"contact_id", "note_conversation_id"}
    assert set(identity.recall(runtime, "sprig", john)) == {"attribute_versions"}
    with Runtime.of(app).db.session() as session:
        rows = session.execute(sa.select(DestinationLink.subscriber_key, DestinationLink.destination)).all()
    assert sorted(rows) == [("id:sub_hjdgc74u", "sprig"), ("id:sub_hjdgc74u", "spruce")]

    identity.remember(runtime, "sprig", john, attribute_versions={"sparkloop_x": [1, 1]})
    identity.remember(runtime, "spruce", john, note_conversation_id=None)  # as a stale id is forgotten

    assert identity.recall(runtime, "spruce", john) == {"contact_id": spruce["contact_id"]}
    assert identity.recall(runtime, "sprig", john) == {"attribute_versions": {"sparkloop_x": [1, 1]}}


def test_transient_vendor_error_is_retried_and_a_finished_step_is_not_repeated(client, app, sandbox):
    sandbox.configure(faults=[{"vendor": "spruce", "status": 500, "times": 2, "method": "POST",
                               "path_prefix": "/conversations/"}])
    post_event(client, load_fixture("reward_unlocked"))
    run_pending(app)

    spruce_delivery = delivery_to(app, "spruce")
    assert (spruce_delivery.status, spruce_delivery.attempts, spruce_delivery.deferrals) == ("succeeded", 3, 0)
    spruce = sandbox_state(sandbox)["spruce"]
    assert len(spruce["contacts"]) == 1 and len(spruce["conversations"]) == 1
    assert _count(sandbox, "POST", "/contacts") == 1


def test_permanent_vendor_error_fails_the_delivery_with_the_vendor_message(client, app, sandbox):
    sandbox.configure(faults=[{"vendor": "spruce", "status": 400, "times": None, "method": "POST",
                               "path_prefix": "/contacts"}])
    post_event(client, load_fixture("new_referral"))
    run_pending(app)

    by_destination = {d.destination: d for d in deliveries(app)}
    assert by_destination["sprig"].status == "succeeded"
    failed = by_destination["spruce"]
    assert (failed.status, failed.attempts, failed.last_status_code) == ("failed", 1, 400)
    assert "400" in failed.last_error
    assert "john.doe@email.com" not in failed.last_error
    assert events(app)[0].status == "failed"


def test_throttled_delivery_waits_without_spending_attempts(client, app, sandbox):
    sandbox.configure(faults=[{"vendor": "sprig", "status": 429, "times": 3, "method": "POST",
                               "path_prefix": "/v2/users"}])
    post_event(client, load_fixture("reward_unlocked"))
    started = time.monotonic()
    run_pending(app, honour_waits=True)

    sprig = delivery_to(app, "sprig")
    # Three runs deferred by a 429 each, then the one that succeeded: no retry budget spent.
    assert (sprig.status, sprig.attempts, sprig.deferrals) == ("succeeded", 4, 3)
    assert time.monotonic() - started >= 3  # three 429s, each asking for a 1 s wait


def test_a_rejected_key_opens_the_breaker_and_keeps_deliveries_pending(relay_app, sandbox):
    app = relay_app(SPRIG_API_KEY="revoked", SPRUCE_API_TOKEN="")
    post_event(app.test_client(), load_fixture("reward_unlocked"))
    referral = load_fixture("new_referral")  # another subscriber's: the first's would wait for its turn instead
    referral["subscriber"].update(id="sub_another", email="another@example.com")
    post_event(app.test_client(), referral)
    run_pending(app, rounds=3)

    # Every run was deferred: three attempts each, no retry budget spent.
    assert [(d.status, d.attempts, d.deferrals) for d in deliveries(app)] == [("pending", 3, 3)] * 2
    first, second = deliveries(app)
    assert first.last_status_code == 403 and "revoked" not in first.last_error
    assert second.last_error == "circuit open for sprig"
    assert sprig_client(Runtime.of(app)).guard.breaker.state() == "open"
    sprig_calls = [r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sprig"]
    assert len(sprig_calls) == 1  # the breaker stopped every later call


def test_transient_errors_give_up_after_the_attempt_limit(relay_app, sandbox):
    app = relay_app(RELAY_RETRY_MAX_ATTEMPTS="3", SPRUCE_API_TOKEN="")
    sandbox.configure(faults=[{"vendor": "sprig", "status": 503, "times": None, "method": "POST",
                               "path_prefix": "/v2/users"}])
    post_event(app.test_client(), load_fixture("reward_unlocked"))
    run_pending(app)
    [sprig] = deliveries(app)
    assert (sprig.status, sprig.attempts, sprig.deferrals) == ("failed", 3, 0)
    assert sprig.last_error.startswith("gave up after 3 failed attempts")
    assert events(app)[0].status == "failed"


def test_deliveries_past_the_maximum_age_fail_instead_of_waiting_forever(client, app, sandbox):
    sandbox.configure(faults=[{"vendor": "sprig", "status": 503, "times": None, "method": "POST",
                               "path_prefix": "/v2/users"}])
    post_event(client, load_fixture("reward_unlocked"))
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).values(created_at=utcnow() - timedelta(hours=25)))
        session.commit()
    run_pending(app, rounds=1)
    sprig = delivery_to(app, "sprig")
    assert (sprig.status, sprig.attempts) == ("failed", 1)
    assert sprig.last_error.startswith("gave up after 25.0 h")


def test_backoff_grows_is_capped_and_never_fires_almost_at_once():
    for attempts, step in [(1, 30), (2, 60), (5, 480), (20, MAX_BACKOFF_S)]:
        waits = [backoff(attempts, 30) for _ in range(200)]
        assert all(step / 2 <= w <= step for w in waits)


def test_event_without_a_subscriber_fails_visibly(client, app):
    post_event(client, {"type": "sync_subscriber"})
    run_pending(app)
    [delivery] = deliveries(app)
    assert delivery.status == "failed"
    assert "no subscriber" in delivery.last_error
    assert events(app)[0].status == "failed"


def test_a_delivery_runs_once_even_if_its_task_arrives_twice(client, app, sandbox):
    post_event(client, load_fixture("reward_unlocked"))
    spruce_id = delivery_to(app, "spruce").id
    assert deliver(app, spruce_id) == "succeeded"
    assert deliver(app, spruce_id) == "skipped"
    [conversation] = sandbox_state(sandbox)["spruce"]["conversations"]
    assert len(sandbox_state(sandbox)["spruce"]["items"][conversation["id"]]) == 1


def _count(sandbox, method: str, path: str) -> int:
    return sum(
        1 for r in sandbox_state(sandbox)["requests"]
        if r["vendor"] == "spruce" and r["method"] == method and r["path"].endswith(path)
    )


def test_no_log_line_carries_personal_data_or_secrets(client, app, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    sandbox.configure(faults=[{"vendor": "spruce", "status": 400, "times": 1, "method": "POST",
                               "path_prefix": "/conversations/"}])
    post_event(client, load_fixture("new_referral"))
    post_event(client, load_fixture("reward_redeemed"))
    post_event(client, load_fixture("new_referral"), token="wrong-token")
    invalid = load_fixture("reward_unlocked")
    invalid["subscriber"]["email"] = "not-an-email@"
    post_event(client, invalid)
    run_pending(app)
    assert sprig_client(Runtime.of(app)).get_user("john.doe@email.com") is not None

    assert {e.status for e in events(app)} == {"done", "failed", "invalid"}
    # werkzeug's access log here is the sandbox's: it plays the vendor, which does see the data.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")
    assert "delivery" in logged  # the delivery path did log
    for secret in ("john.doe@email.com", "john.doe%40email.com", "john.smith@email.com",
                   "john.smith%40email.com", "not-an-email@", "Springfield",
                   "1 Example Street", TOKEN, "wrong-token", "sandbox-sprig-key",
                   "sandbox-spruce-token"):
        assert secret not in logged


def _raises_with_personal_data(subscriber):
    raise KeyError(subscriber.email)  # a message quoting the payload


def test_an_unexpected_error_is_recorded_by_class_and_frames_without_its_message(
        client, app, sandbox, sentry, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr("workers.spruce.delivery.contact_body", _raises_with_personal_data)
    post_event(client, load_fixture("reward_unlocked"))
    assert deliver(app, delivery_to(app, "spruce").id) == "retried"  # it may be transient

    spruce = delivery_to(app, "spruce")
    assert spruce.last_error.startswith("internal error (KeyError) at tests/test_delivery.py:")
    assert spruce.last_error.endswith(" in _raises_with_personal_data")
    assert any(f.startswith("workers/spruce/delivery.py:") and f.endswith(" in _find_or_create_contact")
               for f in spruce.last_error_trace)
    assert spruce.last_error_trace[0].startswith("workers/engine.py:")
    shown = app.test_cli_runner().invoke(main, ["events", "show", str(spruce.event_id)]).output
    assert "at workers/spruce/delivery.py:" in shown and "in _find_or_create_contact" in shown
    [report] = [sent for sent in sentry.sent if '"exception"' in sent]
    assert "_find_or_create_contact" in report  # the traceback, for Sentry to group
    for text in (shown, report, spruce.last_error, "\n".join(r.getMessage() for r in caplog.records)):
        assert "john.doe@email.com" not in text
