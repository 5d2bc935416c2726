"""The relay command, through Flask's CLI runner against the real database."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask.cli import ScriptInfo

import operations.replay
from relay.models import Delivery, Event
from relay.runtime import Runtime
from testbed.apps import deliveries, delivery_to, events, post_event, received_days_ago, run_pending
from testbed.cli import invoke
from testbed.examples import load_fixture
from testbed.waiting import wait_for
from web.cli import main


def listed(app, *filters) -> list[dict]:
    result = invoke(app, "events", "list", "--json", *filters)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def post_unlocks(client, count: int) -> None:
    """`count` reward_unlocked events, each for another subscriber."""
    for n in range(count):
        payload = load_fixture("reward_unlocked")
        payload["subscriber"]["id"] = f"sub_unlock{n}"
        assert post_event(client, payload).status_code == 200


def fail_spruce(sandbox, status=400):
    sandbox.configure(faults=[{"vendor": "spruce", "status": status, "times": None, "method": "POST",
                               "path_prefix": "/contacts"}])


# --- list and show ------------------------------------------------------------------------


def test_events_list_json_has_the_documented_fields(client, app):
    post_event(client, load_fixture("new_referral"))
    post_event(client, {"type": "partner_referral_rejected"})

    events_listed = listed(app)
    assert [e["type"] for e in events_listed] == ["partner_referral_rejected", "new_referral"]
    newest_handled = events_listed[1]
    assert set(newest_handled) >= {"id", "type", "status", "source", "received_at", "deliveries"}
    assert [
        {k: d[k] for k in ("destination", "status", "attempts", "last_error")}
        for d in newest_handled["deliveries"]
    ] == [
        {"destination": "sprig", "status": "pending", "attempts": 0, "last_error": None},
        {"destination": "spruce", "status": "pending", "attempts": 0, "last_error": None},
    ]


def test_events_list_filters_combine(client, app, sandbox):
    post_event(client, load_fixture("new_referral"))
    post_event(client, load_fixture("reward_unlocked"))
    post_event(client, {"type": "partner_referral_rejected"})
    fail_spruce(sandbox)
    run_pending(app)
    old, recent, unhandled = (e.id for e in events(app))
    received_days_ago(app, old, 3)

    assert [e["status"] for e in listed(app, "--status", "unhandled")] == ["unhandled"]
    assert [e["id"] for e in listed(app, "--status", "failed")] == [recent, old]
    assert [e["id"] for e in listed(app, "--status", "failed", "--since", "2d")] == [recent]
    assert [e["id"] for e in listed(app, "--until", "1d")] == [old]
    assert [e["id"] for e in listed(app, "--type", "reward_unlocked")] == [recent]
    assert [e["id"] for e in listed(app, "--destination", "spruce", "--error", "400")] == [recent, old]
    assert listed(app, "--destination", "sprig", "--error", "400") == []
    assert [e["id"] for e in listed(app, "--limit", "1")] == [unhandled]


def test_an_unknown_destination_is_refused_naming_the_known_ones(app):
    result = invoke(app, "events", "list", "--destination", "sprigg")
    assert result.exit_code == 2, result.output
    assert "'sprigg' is not a destination; choose from sprig, spruce" in result.output


def test_events_list_table_shows_statuses_and_errors(client, app, sandbox):
    post_event(client, load_fixture("new_referral"))
    fail_spruce(sandbox)
    run_pending(app)
    result = app.test_cli_runner().invoke(main, ["events", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "new_referral" in result.output and "failed" in result.output
    assert "spruce failed (1 attempt)" in result.output
    assert "spruce: POST /contacts/search -> 400 BAD_PARAMETER: injected fault" in result.output


def test_events_show_masks_personal_data_unless_revealed(client, app):
    payload = load_fixture("reward_redeemed")
    post_event(client, payload)
    event_id = events(app)[0].id

    masked = invoke(app, "events", "show", str(event_id))
    assert masked.exit_code == 0
    for secret in ("john.doe@email.com", "John Doe", "Springfield", "Example Street"):
        assert secret not in masked.output
    assert "sub_hjdgc74u" in masked.output and "masked" in masked.output

    shown = json.loads(invoke(app, "events", "show", str(event_id), "--json", "--reveal").output)
    assert shown["payload"] == payload
    assert [d["destination"] for d in shown["deliveries"]] == ["sprig", "spruce"]
    assert {"attempts", "deferrals", "lane", "last_status_code", "last_error", "created_at", "progress",
            "throttle_slot_at"} <= set(shown["deliveries"][0])


def test_events_show_lists_attempts_and_the_vendor_error(client, app, sandbox):
    post_event(client, load_fixture("new_referral"))
    fail_spruce(sandbox)
    run_pending(app)
    result = invoke(app, "events", "show", str(events(app)[0].id))
    assert "delivery" in result.output and "spruce" in result.output
    assert "last HTTP status 400" in result.output
    assert "last error:" in result.output


def show(app, event_id: int, *args: str) -> str:
    return app.test_cli_runner().invoke(main, ["events", "show", str(event_id), *args],
                                        env={"COLUMNS": "250"}).output


def test_events_show_says_what_a_delivery_waits_for(relay_app):
    app = relay_app(SPRUCE_RATE_LIMIT="1/10s", SPRIG_API_KEY="")  # one Spruce call, then a wait
    post_event(app.test_client(), load_fixture("reward_unlocked"))
    event_id = events(app)[0].id
    run_pending(app, rounds=1)

    shown = show(app, event_id)
    assert "delivery 1 → spruce: pending, 1 attempt, 1 deferred" in shown
    assert "throttle slot reserved for: " in shown
    assert "catch-up work" not in shown and "replayed at" not in shown
    assert "finished steps" not in shown  # its one call found no contact yet
    [spruce] = json.loads(show(app, event_id, "--json"))["deliveries"]
    assert (spruce["status"], spruce["lane"], spruce["attempts"], spruce["deferrals"]) == ("pending", "live", 1, 1)
    assert spruce["throttle_slot_at"] > spruce["created_at"] and spruce["progress"] == {}


def test_events_show_lists_finished_steps_with_the_vendor_ids(client, app):
    post_event(client, load_fixture("reward_unlocked"))
    run_pending(app)
    spruce = delivery_to(app, "spruce")
    shown = show(app, events(app)[0].id)
    contact, conversation = spruce.progress["spruce.contact"], spruce.progress["spruce.conversation"]
    assert f"spruce.contact ({contact}), spruce.conversation ({conversation}), spruce.note (" in shown
    assert "sprig.attributes.subscriber, sprig.events.subscriber" in shown


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["events", "show", "999"], "no event with id 999"),
    (["events", "list", "--since", "yesterday"], "'yesterday' is neither a date"),
    (["events", "list", "--since", "1d", "--until", "2d"], "--since must be earlier than --until"),
    (["events", "list", "--status", "broken"], "'broken' is not one of"),
    (["events", "replay"], "say which events to replay"),
    (["events", "replay", "999"], "no event with id 999"),
    (["events", "replay", "--status", "failed", "--dry-run", "--wait"], "exclude each other"),
    (["events", "purge"], "give either --older-than AGE or --retention"),
    (["events", "purge", "--older-than", "30d", "--retention"], "give either --older-than AGE or --retention"),
    (["events", "purge", "--older-than", "soon"], "not a duration"),
])
def test_bad_input_is_one_line_naming_the_problem_and_exit_2(client, app, args, message):
    post_event(client, load_fixture("new_referral"))
    before = [(d.id, d.status, d.attempts) for d in deliveries(app)]
    result = app.test_cli_runner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert [(d.id, d.status, d.attempts) for d in deliveries(app)] == before


def test_unmigrated_database_is_one_clear_line_and_exit_1(bare_app, tmp_path):
    fresh = bare_app(migrate=False, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    result = fresh.test_cli_runner().invoke(main, ["events", "list"])
    assert result.exit_code == 1
    assert "relay db upgrade" in result.output
    assert "Traceback" not in result.output


def test_unreachable_database_is_one_clear_line_and_exit_1(bare_app):
    down = bare_app(migrate=False, DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    result = down.test_cli_runner().invoke(main, ["events", "stats"])
    assert result.exit_code == 1
    assert "database is unreachable" in result.output


# --- the group: version and help ----------------------------------------------------------


def test_version_is_relays():
    from importlib.metadata import version

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"relay {version('relay')}\n"


def test_help_offers_only_relays_options_and_builds_no_app():
    def refuse():
        raise AssertionError("--help built the app")

    result = CliRunner().invoke(main, ["--help"], obj=ScriptInfo(create_app=refuse))

    assert result.exit_code == 0 and "Traceback" not in result.output
    options = result.output.split("Options:")[1].split("Commands:")[0]
    assert [line.split()[0] for line in options.strip().splitlines()] == ["--version", "--help"]
    assert "events" in result.output and ".env" in result.output
    for flask_option in ("--app", "--debug", "--env-file"):
        refused = CliRunner().invoke(main, [flask_option, "x", "events", "list"])
        assert refused.exit_code == 2 and f"No such option '{flask_option}'" in refused.output


def test_no_flask_variable_sets_an_option(client, app, sandbox, monkeypatch):
    post_event(client, load_fixture("reward_unlocked"))
    run_pending(app)
    received_days_ago(app, events(app)[0].id, 2)
    monkeypatch.setenv("FLASK_EVENTS_PURGE_YES", "1")  # Flask's CLI would read it as --yes

    result = invoke(app, "events", "purge", "--older-than", "1d", input="n\n")

    assert result.exit_code == 1 and "Delete 1 finished events" in result.output  # asked, and told no
    assert len(events(app)) == 1


# --- replay -------------------------------------------------------------------------------


def test_replay_of_failed_deliveries_resumes_them_and_skips_what_succeeded(client, app, sandbox):
    post_event(client, load_fixture("new_referral"))
    fail_spruce(sandbox)
    run_pending(app)
    assert events(app)[0].status == "failed"
    sandbox.configure(faults=[])

    result = invoke(app, "events", "replay", "--status", "failed", "--yes")
    assert result.exit_code == 0, result.output
    assert "replayed 1 deliveries of 1 events" in result.output
    assert "skipped 1: succeeded (a forced replay sends it again)" in result.output
    spruce = delivery_to(app, "spruce")
    assert (spruce.status, spruce.attempts, spruce.event_id) == ("pending", 0, events(app)[0].id)
    assert spruce.replayed_at is not None and spruce.lane == "catch_up"

    run_pending(app)
    assert events(app)[0].status == "done"
    assert len(sandbox.snapshot()["spruce"]["contacts"]) == 1
    sprig_calls = [r for r in sandbox.snapshot()["requests"] if r["vendor"] == "sprig"]
    assert len(sprig_calls) == 2  # the Sprig delivery was not sent again


def test_replay_dry_run_counts_and_estimates_without_changing_anything(client, app, sandbox):
    post_unlocks(client, 3)
    fail_spruce(sandbox)
    run_pending(app)
    before = [(d.id, d.status, d.attempts, d.replayed_at) for d in deliveries(app)]

    result = invoke(app, "events", "replay", "--status", "failed", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would replay 3 deliveries of 3 events" in result.output
    assert "reward_unlocked" in result.output and "spruce" in result.output
    assert "up to 15 calls" in result.output  # at most five calls per note
    assert [(d.id, d.status, d.attempts, d.replayed_at) for d in deliveries(app)] == before


def test_a_dry_run_takes_no_row_lock_and_writes_nothing(client, app, sandbox):
    post_unlocks(client, 2)
    post_event(client, {"type": "partner_referral_rejected"})  # unhandled: planned again, read-only
    fail_spruce(sandbox)
    run_pending(app)
    statements = []
    engine = Runtime.of(app).db.engine

    def record(conn, cursor, statement, *args):
        statements.append(statement.upper())

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        result = invoke(app, "events", "replay", "--status", "failed", "--status", "unhandled", "--force", "--dry-run")
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert "would replay 4 deliveries of 2 events" in result.output, result.output
    assert statements and all(s.lstrip().startswith("SELECT") for s in statements), statements
    assert not any("FOR UPDATE" in s for s in statements)


def test_replay_asks_before_replaying_many_events(client, app, sandbox):
    fail_spruce(sandbox)
    post_unlocks(client, 11)
    run_pending(app)

    declined = invoke(app, "events", "replay", "--status", "failed", input="n\n")
    assert declined.exit_code == 1 and "Replay 11 events?" in declined.output
    assert {d.status for d in deliveries(app) if d.destination == "spruce"} == {"failed"}


def test_invalid_event_is_validated_again_on_replay(client, app):
    payload = load_fixture("reward_unlocked")
    del payload["reward"]["id"]
    assert post_event(client, payload).status_code == 400
    [event] = events(app)
    assert event.status == "invalid"
    # The stored payload is fixed (as a schema fix would make it valid).
    with Runtime.of(app).db.session() as session:
        stored = session.get(Event, event.id)
        stored.payload = load_fixture("reward_unlocked")
        session.commit()

    result = invoke(app, "events", "replay", str(event.id))
    assert result.exit_code == 0, result.output
    assert "replayed 2 deliveries of 1 events" in result.output
    run_pending(app)
    assert events(app)[0].status == "done"


def test_an_unhandled_event_stays_skipped_while_no_handler_exists(client, app):
    post_event(client, {"type": "partner_referral_rejected"})
    result = invoke(app, "events", "replay", "--status", "unhandled")
    assert "skipped 1: still no handler for its type" in result.output
    assert events(app)[0].status == "unhandled" and deliveries(app) == []


def test_forced_replay_of_a_note_does_not_post_it_twice(client, app, sandbox):
    post_event(client, load_fixture("reward_redeemed"))
    run_pending(app)
    [conversation] = sandbox.snapshot()["spruce"]["conversations"]

    result = invoke(app, "events", "replay", "--force", "--destination", "spruce", str(events(app)[0].id))
    assert "replayed 1 deliveries of 1 events" in result.output
    run_pending(app)
    assert events(app)[0].status == "done"
    assert len(sandbox.snapshot()["spruce"]["items"][conversation["id"]]) == 1


# --- stats and purge ----------------------------------------------------------------------


def test_stats_reports_counts_failures_and_vendor_state(relay_app, sandbox):
    # A window of a minute: the three calls below count in it however slow the machine is.
    app = relay_app(SPRIG_RATE_LIMIT="1000/60s")
    client = app.test_client()
    post_event(client, load_fixture("new_referral"))
    post_event(client, load_fixture("reward_unlocked"))
    fail_spruce(sandbox)
    run_pending(app)

    stats = json.loads(invoke(app, "events", "stats", "--json").output)
    assert {(row["status"], row["type"]) for row in stats["events"]} == {
        ("failed", "new_referral"), ("failed", "reward_unlocked")}
    assert stats["failed_by_destination"] == {"spruce": 2}
    [top] = stats["top_errors"]
    assert top["count"] == 2 and "400" in top["error"]
    assert stats["oldest_pending_s"] is None
    # Each Sprig call went through the shared throttle: two upserts for the new referral's
    # two people, one for the reward.
    assert stats["vendors"]["sprig"]["breaker"] == "closed"
    assert stats["vendors"]["sprig"]["calls_in_window"] == 3
    assert stats["vendors"]["sprig"]["limit"] == "1000/60s"
    assert stats["vendors"]["spruce"]["limit"] == "1000/1s"

    text = invoke(app, "events", "stats").output
    assert "Oldest pending delivery: none" in text and "spruce 2" in text


def test_purge_deletes_old_finished_events_and_keeps_failed_longer(client, app, sandbox):
    post_event(client, load_fixture("new_referral"))         # failed, 40 days old
    post_event(client, load_fixture("reward_unlocked"))      # done, 40 days old
    recent_payload = load_fixture("reward_unlocked")
    recent_payload["subscriber"]["id"] = "sub_recent"
    post_event(client, recent_payload)                       # done, today
    sandbox.configure(faults=[{"vendor": "spruce", "status": 400, "times": 1, "method": "POST",
                               "path_prefix": "/contacts"}])
    run_pending(app)
    old_failed, old_done, recent = (e.id for e in events(app))
    assert [e.status for e in events(app)] == ["failed", "done", "done"]
    for event_id in (old_done, old_failed):
        received_days_ago(app, event_id, 40)

    dry = invoke(app, "events", "purge", "--older-than", "30d", "--dry-run")
    assert "1 finished events older than 30d" in dry.output and len(events(app)) == 3

    result = invoke(app, "events", "purge", "--older-than", "30d", "--yes")
    assert "purged 1" in result.output
    assert [e.id for e in events(app)] == [old_failed, recent]

    result = invoke(app, "events", "purge", "--older-than", "30d", "--include-failed", "--yes")
    assert "purged 1" in result.output
    assert [e.id for e in events(app)] == [recent]
    with Runtime.of(app).db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 2


def test_purge_never_touches_events_still_being_delivered(client, app):
    post_event(client, load_fixture("reward_unlocked"))
    received_days_ago(app, events(app)[0].id, 400)
    result = invoke(app, "events", "purge", "--older-than", "1d", "--include-failed", "--yes")
    assert "0 finished events" in result.output
    assert len(events(app)) == 1


def test_replay_after_an_outage_brings_every_event_to_done_once(client, app, sandbox, worker):
    """End to end: deliveries fail at the vendor, the vendor is healed, the operator replays."""
    fail_spruce(sandbox)
    for n in range(3):
        payload = load_fixture("reward_redeemed")
        payload["subscriber"].update(id=f"sub_outage{n}", email=f"outage{n}@example.com")
        post_event(client, payload)

    assert wait_for(lambda: {e.status for e in events(app)} == {"failed"}, timeout=30), [
        (d.destination, d.status, d.last_error) for d in deliveries(app)]
    sandbox.configure(faults=[])

    result = invoke(app, "events", "replay", "--status", "failed", "--yes", "--wait", "--timeout", "60s")
    assert result.exit_code == 0, result.output
    assert "replayed 3 deliveries of 3 events" in result.output
    assert "finished: succeeded 3" in result.output
    assert {e.status for e in events(app)} == {"done"}
    vendor_state = sandbox.snapshot()
    notes = [item for items in vendor_state["spruce"]["items"].values() for item in items]
    assert len(vendor_state["spruce"]["contacts"]) == 3 and len(notes) == 3

    again = invoke(app, "events", "replay", "--status", "failed", "--yes", "--wait")
    assert "nothing to replay" in again.output
    assert len(sandbox.snapshot()["requests"]) == len(vendor_state["requests"])
    # Even a forced replay of everything leaves Spruce as it was: no second contact or note.
    forced = invoke(app, "events", "replay", "--force", "--destination", "spruce", "--type",
                    "reward_redeemed", "--yes", "--wait", "--timeout", "60s")
    assert "finished: succeeded 3" in forced.output, forced.output
    after = sandbox.snapshot()["spruce"]
    assert len(after["contacts"]) == 3
    assert sum(len(items) for items in after["items"].values()) == 3


def test_an_interrupted_replay_is_consistent_and_the_rerun_continues(client, app, sandbox, monkeypatch):
    fail_spruce(sandbox)
    post_unlocks(client, 4)
    run_pending(app)
    sandbox.configure(faults=[])
    monkeypatch.setattr(operations.replay, "BATCH", 1)
    real_batches = operations.replay._batches

    def interrupted_after_two_batches(ids):
        for n, batch in enumerate(real_batches(ids)):
            if n == 2:
                raise KeyboardInterrupt  # Ctrl-C once two batches were committed
            yield batch

    monkeypatch.setattr(operations.replay, "_batches", interrupted_after_two_batches)
    result = app.test_cli_runner().invoke(main, ["events", "replay", "--status", "failed", "--yes"])
    assert result.exit_code == 130 and "run the same command again" in result.output
    spruce = [d for d in deliveries(app) if d.destination == "spruce"]
    assert [d.status for d in spruce] == ["pending", "pending", "failed", "failed"]

    monkeypatch.setattr(operations.replay, "_batches", real_batches)
    rerun = invoke(app, "events", "replay", "--status", "failed", "--yes")
    assert "replayed 2 deliveries of 2 events" in rerun.output
    run_pending(app)
    assert {e.status for e in events(app)} == {"done"}
    assert [d.attempts for d in deliveries(app) if d.destination == "spruce"] == [1, 1, 1, 1]


def test_a_bad_variable_is_one_line_and_exit_code_2_for_every_command(tmp_path):
    from click.testing import CliRunner

    env = {"RELAY_INSTANCE_PATH": str(tmp_path), "SPRIG_RATE_LIMIT": "fast"}
    for command in (["events", "list"], ["db", "upgrade"], ["subscribers", "forget", "a@example.com", "--yes"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 2, (command, result.output)
        assert result.output.startswith("Error: SPRIG_RATE_LIMIT") and result.output.count("\n") == 1, result.output
    assert not list(tmp_path.iterdir())  # nothing made, not even the SQLite store


# --- operator commands: issue 16 ----------------------------------------------------------


def test_stats_lines_up_its_columns_whatever_the_status_markup(relay_app, sandbox):
    from rich.console import Console

    from web.cli.stats import print_stats

    # A window long enough that a slow machine's run still finds Sprig's three calls in it.
    app = relay_app(SPRIG_RATE_LIMIT="1000/300s")
    client = app.test_client()
    post_event(client, load_fixture("new_referral"))
    post_event(client, load_fixture("reward_unlocked"))
    post_event(client, {"type": "partner_referral_rejected"})
    fail_spruce(sandbox)
    run_pending(app)
    stats = json.loads(invoke(app, "events", "stats", "--json").output)
    out = Console(record=True, width=120, highlight=False)
    print_stats(stats, out)
    text = out.export_text()

    rows = [line for line in text.splitlines() if any(f" {t} " in line for t in ("new_referral", "reward_unlocked",
                                                                                  "partner_referral_rejected"))]
    assert len(rows) == 3, text
    # failed (bold red) and unhandled (dim): the type and the count start and end in the same columns.
    assert len({line.index(t) for line, t in zip(rows, ("new_referral", "reward_unlocked", "partner_referral_rejected"))
                if t in line}) == 1, text
    assert len({len(line.rstrip()) for line in rows}) == 1, text
    assert "[bold red]" not in text and "Oldest pending delivery: none" in text and "spruce 2" in text
    assert "injected fault" in text  # the most common error, in its own table
    [sprig] = [line for line in text.splitlines() if " sprig " in line and " closed " in line]
    assert "1000/300s" in sprig and " 3 " in sprig  # its three calls in the window


def test_replay_dry_run_estimates_with_the_throttles_own_pacing(relay_app, sandbox):
    app = relay_app(SPRUCE_RATE_LIMIT="50/60s")
    post_unlocks(app.test_client(), 3)
    fail_spruce(sandbox)
    run_pending(app)

    result = invoke(app, "events", "replay", "--status", "failed", "--dry-run")
    assert result.exit_code == 0, result.output
    # Replays are catch-up work, one call every 1.2 s: the 15th goes 14 intervals after the first.
    assert "spruce: up to 15 calls, about 17s at 50/60s, one every 1.2s as catch-up work" in result.output
    assert "at least" not in result.output


def test_a_delivery_error_names_its_vendor_once(client, app, sandbox):
    post_event(client, load_fixture("new_referral"))
    fail_spruce(sandbox)
    run_pending(app)
    [failed] = [d for d in deliveries(app) if d.status == "failed"]
    assert failed.last_error.startswith("POST /contacts/search -> 400 BAD_PARAMETER: injected fault")

    listed_text = app.test_cli_runner().invoke(main, ["events", "list"], env={"COLUMNS": "250"}).output
    shown = invoke(app, "events", "show", str(failed.event_id)).output
    assert "spruce: POST /contacts/search -> 400" in listed_text
    assert "last error: POST /contacts/search -> 400" in shown
    for text in (listed_text, shown):
        assert "spruce POST" not in text and "spruce: spruce" not in text


def test_stats_without_redis_says_it_cannot_see_the_workers_throttle(bare_app):
    # Without REDIS_URL the throttle and breaker live in each process: this command's own
    # would read "closed, 0 calls" whatever the workers do.
    bare_app = bare_app()
    stats = json.loads(invoke(bare_app, "events", "stats", "--json").output)
    assert stats["vendors"] is None and "no REDIS_URL" in stats["vendors_unavailable"]

    text = invoke(bare_app, "events", "stats").output
    assert "Throttle and circuit breaker: not visible: no REDIS_URL" in text
    assert "closed" not in text
