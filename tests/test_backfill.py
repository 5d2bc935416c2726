"""`relay backfill`, through Flask's CLI runner, against the real database, Redis and the
sandbox's SparkLoop API over HTTP."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from relay.models import Event, utcnow
from relay.runtime import Runtime
from testbed.apps import deliveries, events, fresh_services, make_app, post_event, run_pending, sandbox_state
from testbed.backfill import API_KEY, backfill, backfilled, seed
from testbed.examples import load_fixture
from web.cli.backfill import backfill_command
from workers.sparkloop import retry
from workers.sparkloop.client import SparkLoopClient


@pytest.fixture
def sqlite_app(redis_url, sandbox, tmp_path):
    """For the slow tests, whose subject does not depend on the database."""
    environ = fresh_services(f"sqlite:///{tmp_path / 'relay.sqlite3'}", redis_url, sandbox, tmp_path / "instance")
    app = make_app(environ)
    yield app
    Runtime.of(app).close()  # its metrics flushed before the next test empties Redis


def subscriber_ids(evts) -> set[str]:
    return {e.payload["subscriber"]["id"] for e in evts}


def sparkloop_requests(sandbox) -> list[dict]:
    return [r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sparkloop"]


def set_received_at(app, event_id: int, when) -> None:
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Event).where(Event.id == event_id).values(received_at=when))
        session.commit()


# --- what it creates --------------------------------------------------------------------------


def test_creates_a_sync_subscriber_event_for_each_subscriber_created_since_the_date(app, sandbox):
    recent = seed(sandbox, 1, 2, 3, referrer_code="f9464199", referral_status="pending")
    seed(sandbox, 30, 50, first=3)

    result = backfill(app, "--since", "24h", "--per-page", "2")

    assert result.exit_code == 0, result.output
    created = backfilled(app)
    assert subscriber_ids(created) == {s["uuid"] for s in recent}
    assert {e.type for e in created} == {"sync_subscriber"}
    newest = next(e for e in created if e.payload["subscriber"]["id"] == recent[0]["uuid"])
    assert newest.payload == {"type": "sync_subscriber", "subscriber": {
        "id": recent[0]["uuid"], "email": "person0@example.com", "name": "Person Number0",
        "referral_code": recent[0]["ref_code"], "referrer_code": "f9464199", "referred": True,
        "referral_status": "pending", "origin": "signup",
        "created_at": int(datetime.fromisoformat(recent[0]["created_at"]).timestamp()),
    }}
    # Catch-up work, like a replay, though nobody replayed it.
    assert [(d.destination, d.lane, d.replayed_at) for d in deliveries(app)] == [("sprig", "catch_up", None)] * 3
    # Newest first: page 2 reached a subscriber older than the date, so page 3 was never read.
    assert len(sparkloop_requests(sandbox)) == 2
    assert "2 pages read, 3 subscribers seen, 3 created, 0 skipped as already received, " \
           "0 skipped as duplicates" in result.output


def test_backfilled_events_reach_sprig(app, sandbox):
    [subscriber] = seed(sandbox, 1, referral_status="verified")
    assert backfill(app, "--since", "2h").exit_code == 0

    run_pending(app)

    [event] = backfilled(app)
    assert event.status == "done"
    user = sandbox_state(sandbox)["sprig"]["users"]["person0@example.com"]
    assert user["attributes"] == {
        "sparkloop_subscriber_id": subscriber["uuid"], "sparkloop_referral_code": subscriber["ref_code"],
        "sparkloop_referred": "false", "sparkloop_referral_status": "verified",
    }
    assert [e["event"] for e in user["events"]] == ["sparkloop_sync_subscriber"]


def test_pages_through_every_page_in_range(app, sandbox):
    subscribers = seed(sandbox, 1, 2, 3, 4, 5, 6, 7)

    result = backfill(app, "--since", "1d", "--per-page", "2")

    assert result.exit_code == 0, result.output
    assert subscriber_ids(backfilled(app)) == {s["uuid"] for s in subscribers}
    assert len(sparkloop_requests(sandbox)) == 4
    assert "page 4 of 4: 1 listed, 1 new since the date: 1 event created" in result.output
    assert "4 pages read, 7 subscribers seen, 7 created" in result.output


def test_a_row_pushed_onto_the_next_page_during_the_walk_is_taken_once(app, sandbox, monkeypatch):
    subscribers = seed(sandbox, 1, 2, 3, 4)
    original = SparkLoopClient.list_subscribers

    def list_then_sign_someone_up(self, page=1, per_page=200):
        listed = original(self, page, per_page)
        if page == 1:  # a newer subscriber shifts every row down by one
            seed(sandbox, 0, first=99)
        return listed

    monkeypatch.setattr(SparkLoopClient, "list_subscribers", list_then_sign_someone_up)
    result = backfill(app, "--since", "1d", "--per-page", "2")

    assert result.exit_code == 0, result.output
    created = backfilled(app)
    assert sorted(e.payload["subscriber"]["id"] for e in created) == sorted(s["uuid"] for s in subscribers)
    assert "4 subscribers seen, 4 created" in result.output


# --- de-duplication -----------------------------------------------------------------------------


def test_subscribers_named_by_a_received_event_are_skipped(app, sandbox):
    post_event(app.test_client(), load_fixture("new_referral"))  # sub_hjdgc74u and sub_93ehus8h
    now = utcnow()
    [fresh] = sandbox.add_sparkloop_subscribers([
        # the webhook's subscriber, by id
        {"uuid": "sub_hjdgc74u", "email": "john.doe@email.com", "created_at": (now - timedelta(hours=1)).isoformat()},
        # the webhook's referrer, by email (another case): SparkLoop's id would match too
        {"uuid": "sub_unmatched", "email": "John.Smith@Email.com", "created_at": (now - timedelta(hours=1)).isoformat()},
        {"uuid": "sub_new", "email": "new@example.com", "created_at": (now - timedelta(hours=2)).isoformat()},
    ])[2:]

    result = backfill(app, "--since", "1d")

    assert result.exit_code == 0, result.output
    assert subscriber_ids(backfilled(app)) == {fresh["uuid"]}
    assert "3 subscribers seen, 1 created, 2 skipped as already received" in result.output


def test_an_event_received_before_the_subscriber_was_created_is_not_about_them(app, sandbox):
    post_event(app.test_client(), load_fixture("new_referral"))
    [webhook] = events(app)
    set_received_at(app, webhook.id, utcnow() - timedelta(hours=5))
    sandbox.add_sparkloop_subscribers([{"uuid": "sub_hjdgc74u", "email": "john.doe@email.com",
                                        "created_at": (utcnow() - timedelta(hours=1)).isoformat()}])

    result = backfill(app, "--since", "1d")

    assert result.exit_code == 0, result.output
    assert subscriber_ids(backfilled(app)) == {"sub_hjdgc74u"}


@pytest.mark.parametrize("status_now, created", [("pending", False), ("verified", True)])
def test_a_status_change_lost_in_the_outage_is_backfilled(app, sandbox, status_now, created):
    [subscriber] = seed(sandbox, 3, referral_status=status_now)
    # The sync_subscriber sent at sign-up arrived; the one for the move to verified did not.
    post_event(app.test_client(), {"type": "sync_subscriber", "subscriber": {
        "id": subscriber["uuid"], "email": "person0@example.com", "referral_status": "pending"}})

    result = backfill(app, "--since", "1d")

    assert result.exit_code == 0, result.output
    expected = ["verified"] if created else []
    assert [e.payload["subscriber"]["referral_status"] for e in backfilled(app)] == expected
    assert backfill(app, "--since", "1d").exit_code == 0
    assert len(backfilled(app)) == len(expected)  # a second run finds the status it sent


def test_running_twice_creates_nothing_the_second_time(app, sandbox):
    seed(sandbox, 1, 2, 3, 4, 5)
    assert backfill(app, "--since", "1d", "--per-page", "2").exit_code == 0
    first = [(e.id, e.dedup_key) for e in events(app)]

    again = backfill(app, "--since", "1d", "--per-page", "2")

    assert again.exit_code == 0, again.output
    assert [(e.id, e.dedup_key) for e in events(app)] == first and len(first) == 5
    assert "5 subscribers seen, 0 created, 5 skipped as already received, 0 skipped as duplicates" in again.output


def test_an_identical_sync_subscriber_already_stored_is_a_duplicate(app, sandbox):
    [subscriber] = seed(sandbox, 1, referral_status="verified")
    # The same subscriber and status, stored before the subscriber's creation (so not "received
    # about them"): only the de-duplication key recognises it.
    post_event(app.test_client(), {"type": "sync_subscriber", "subscriber": {
        "id": subscriber["uuid"], "email": "person0@example.com", "referral_status": "verified"}})
    [webhook] = events(app)
    set_received_at(app, webhook.id, utcnow() - timedelta(hours=5))

    dry = backfill(app, "--since", "1d", "--dry-run")
    real = backfill(app, "--since", "1d")

    for result in (dry, real):
        assert result.exit_code == 0, result.output
        assert "1 subscriber seen" in result.output and "1 skipped as duplicates" in result.output
    assert [e.id for e in events(app)] == [webhook.id]


# --- dry run -------------------------------------------------------------------------------------


def test_dry_run_reads_the_api_and_changes_nothing(app, sandbox):
    subscribers = seed(sandbox, 1, 2, 3)

    result = backfill(app, "--since", "1d", "--dry-run", "--per-page", "2")

    assert result.exit_code == 0, result.output
    assert events(app) == [] and deliveries(app) == []
    assert sandbox_state(sandbox)["sprig"]["users"] == {}
    for subscriber in subscribers:
        assert f"would create sync_subscriber for {subscriber['uuid']}" in result.output
    assert "3 subscribers seen, 3 would be created" in result.output
    assert len(sparkloop_requests(sandbox)) == 2

    assert backfill(app, "--since", "1d").exit_code == 0
    assert len(backfilled(app)) == 3


# --- rate limits and vendor errors ------------------------------------------------------------------


def test_a_429_is_honoured_and_the_run_completes(sqlite_app, sandbox):
    seed(sandbox, 1, 2, 3)
    sandbox.configure(faults=[{"vendor": "sparkloop", "status": 429, "times": 1, "path_prefix": "/subscribers"}])

    started = time.monotonic()
    result = backfill(sqlite_app, "--since", "1d", "--per-page", "2")

    assert result.exit_code == 0, result.output
    assert "429" in result.output and "retrying" in result.output
    assert len(backfilled(sqlite_app)) == 3
    assert [r["status"] for r in sparkloop_requests(sandbox)] == [429, 200, 200]
    # SparkLoop names no wait, so every process pauses the default 10 s.
    assert time.monotonic() - started >= 9.5


def test_calls_are_paced_by_the_shared_throttle(relay_app, sandbox):
    app = relay_app(SPARKLOOP_RATE_LIMIT="2/1s")
    seed(sandbox, 1, 2, 3, 4, 5, 6, 7)

    result = backfill(app, "--since", "1d", "--per-page", "2")

    assert result.exit_code == 0, result.output
    stamps = [r["at"] for r in sparkloop_requests(sandbox)]
    assert len(stamps) == 4
    assert max(sum(1 for t in stamps if start <= t < start + 1.0) for start in stamps) <= 2  # no second holds 3
    assert stamps[-1] - stamps[0] >= 1.0
    assert len(backfilled(app)) == 7


def test_a_persistent_server_error_stops_with_one_line_and_exit_1(app, sandbox, monkeypatch):
    monkeypatch.setattr(retry, "BACKOFF_BASE_S", 0.05)
    seed(sandbox, 1)
    sandbox.configure(faults=[{"vendor": "sparkloop", "status": 500, "times": None}])

    result = backfill(app, "--since", "1d")

    assert result.exit_code == 1
    assert "Error: sparkloop GET /subscribers -> 500: injected fault" in result.output
    assert "Stopped: 0 pages read" in result.output
    assert len(sparkloop_requests(sandbox)) == retry.MAX_FAILURES
    assert events(app) == []


def test_a_rejected_api_key_is_exit_1_naming_the_variable(relay_app, sandbox):
    app = relay_app(SPARKLOOP_API_KEY="wrong-key")
    seed(sandbox, 1)

    result = backfill(app, "--since", "1d")

    assert result.exit_code == 1
    assert "401" in result.output and "SPARKLOOP_API_KEY" in result.output
    assert "wrong-key" not in result.output
    assert len(sparkloop_requests(sandbox)) == 1 and events(app) == []


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--since", "yesterday"], "is neither a date"),
    (["--since", "2024-13-01"], "is neither a date"),
    (["--since", "0d"], "'0d' is neither a date"),
    (["--since", "2999-01-01"], "must be in the past"),
    ([], "Missing option '--since'"),
    (["--since", "1d", "--per-page", "201"], "--per-page"),
    (["--since", "1d", "--max-pages", "0"], "--max-pages"),
])
def test_bad_input_is_exit_2_and_changes_nothing(app, sandbox, args, message):
    seed(sandbox, 1)

    result = backfill(app, *args)

    assert result.exit_code == 2
    assert message in result.output
    assert sparkloop_requests(sandbox) == [] and events(app) == []


def test_a_missing_api_key_is_exit_2_naming_the_variable(relay_app, sandbox):
    app = relay_app(SPARKLOOP_API_KEY="")

    result = backfill(app, "--since", "1d")

    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: SPARKLOOP_API_KEY is not set: copy the API key from SparkLoop's Settings → Integrations page"]
    assert sparkloop_requests(sandbox) == []


@pytest.mark.parametrize("store", ["unreachable", "unmigrated"])
def test_an_unusable_database_is_one_clear_line_and_exit_1(bare_app, sandbox, tmp_path, store):
    url = ("postgresql+psycopg://postgres@127.0.0.1:1/relay" if store == "unreachable"
           else f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    sandbox.reset()
    app = bare_app(migrate=False, DATABASE_URL=url, SPARKLOOP_API_KEY=API_KEY,
                   SPARKLOOP_API_URL=sandbox.sparkloop_url)
    seed(sandbox, 1)

    result = backfill(app, "--since", "1d")

    assert result.exit_code == 1
    assert "database is unreachable or not migrated" in result.output
    assert sparkloop_requests(sandbox) == []


def test_max_pages_bounds_the_walk_and_says_so(app, sandbox):
    seed(sandbox, 1, 2, 3, 4, 5)

    result = backfill(app, "--since", "1d", "--per-page", "2", "--max-pages", "2")

    assert result.exit_code == 0, result.output
    assert len(backfilled(app)) == 4 and len(sparkloop_requests(sandbox)) == 2
    assert "Stopped at --max-pages 2" in result.output


def test_every_command_and_option_has_help(app):
    result = app.test_cli_runner().invoke(backfill_command, ["--help"])
    assert result.exit_code == 0
    assert "CREATED since" in result.output
    for option in ("--since", "--dry-run", "--per-page", "--max-pages"):
        assert option in result.output
    assert all(option.help for option in backfill_command.params)


# --- wording ---------------------------------------------------------------------------------------


def test_an_empty_list_reads_page_1_not_page_1_of_0(app, sandbox):
    result = backfill(app, "--since", "1d")

    assert result.exit_code == 0, result.output
    assert "page 1: 0 listed, 0 new since the date: 0 events created, 0 already received, 0 duplicates" \
        in result.stdout
    assert "/0" not in result.output and "of 0" not in result.output
    assert "Done: 1 page read, 0 subscribers seen, 0 created" in result.stdout


def test_a_dry_run_names_what_it_would_create_under_its_page(app, sandbox):
    older, newer = seed(sandbox, 2, 1)  # listed newest first: page 1 holds the newer one

    result = backfill(app, "--since", "1d", "--per-page", "1", "--dry-run")

    lines = result.stdout.splitlines()
    assert lines[1].startswith("page 1 of 2: 1 listed") and newer["uuid"] in lines[2]
    assert lines[3].startswith("page 2 of 2: 1 listed") and older["uuid"] in lines[4]
