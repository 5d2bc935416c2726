"""`relay destinations …`: holding a destination while its vendor is repaired, and resuming it
(operations.destinations), through the CLI runner on both stores, the engine's own functions (the
dispatcher, a worker's run, the sweep) and the sandbox over HTTP: a held destination's deliveries
wait, pending, without an attempt, a vendor call or a retry spent, the others go on; the hold
outlives the app that made it; a resume lets each go once; both are audited; bad input is exit 2."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

import web.cli.destinations
from operations import destinations
from operations.audit import Actor
from relay.db import Database
from relay.models import AuditEntry, Base, Delivery, DeliveryAttempt, DestinationHold, utcnow
from relay.runtime import Runtime
from testbed.apps import deliver, deliveries, dispatch_stored, events, post_event, run_pending, run_sweep, \
    sandbox_state
from testbed.cli import invoke
from testbed.drills.traffic import reward_event
from testbed.reserves import CATCH_UP_PARKED, DAILY_LIMIT, LIVE_PARKED, RESERVES, RETRY_PARKED, park_spruce
from testbed.services import store_at

OPERATOR = "lead@clinic.example"
NOTE_POST = {"vendor": "spruce", "method": "POST", "path_prefix": "/conversations/t_"}


@pytest.fixture
def app(relay_app):
    return relay_app(RELAY_OPERATOR=OPERATOR)


def post_rewards(app, count: int, first: int = 0) -> None:
    client = app.test_client()
    for n in range(first, first + count):
        assert post_event(client, reward_event("reward_unlocked", n)).status_code == 200


def of(app, destination: str) -> list[Delivery]:
    return [d for d in deliveries(app) if d.destination == destination]


def spruce_calls(sandbox) -> int:
    return sum(sandbox.stats().get("spruce", {}).values())


def audit_rows(app) -> list[AuditEntry]:
    with Runtime.of(app).db.session() as session:
        return list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def attempts_of(app, destination: str) -> list[DeliveryAttempt]:
    with Runtime.of(app).db.session() as session:
        return list(session.scalars(
            sa.select(DeliveryAttempt).join(Delivery).where(Delivery.destination == destination)))


def test_a_held_destination_waits_while_the_other_delivers_then_each_goes_once(app, sandbox):
    held = invoke(app, "destinations", "hold", "spruce", "--reason", "Spruce maintenance, ticket 4411")
    assert held.exit_code == 0, held.output
    assert held.output == "held spruce: its deliveries wait (0 pending now); " \
                          "`relay destinations resume spruce` lets them go\n"

    post_rewards(app, 3)
    assert dispatch_stored(app) == 3  # Sprig's only
    run_pending(app)

    assert [d.status for d in of(app, "sprig")] == ["succeeded"] * 3
    spruce = of(app, "spruce")
    assert [(d.status, d.attempts, d.deferrals, d.enqueued_at) for d in spruce] == [("pending", 0, 0, None)] * 3
    assert deliver(app, spruce[0].id) == "held"  # a message for it would find it held
    assert spruce_calls(sandbox) == 0 and attempts_of(app, "spruce") == []

    shown = invoke(app, "events", "show", str(events(app)[0].id))
    assert f"delivery {spruce[0].id} → spruce: held, 0 attempts" in shown.output
    assert f"spruce is held since {_held_at(app):%Y-%m-%d %H:%M:%S} UTC by {OPERATOR}: Spruce maintenance, " \
           "ticket 4411" in shown.output
    listed = json.loads(invoke(app, "events", "list", "--json").output)
    assert [[d["held"] is not None for d in e["deliveries"]] for e in listed] == [[False, True]] * 3
    assert invoke(app, "events", "list").output.count("held") == 3
    detail = json.loads(invoke(app, "events", "show", str(events(app)[0].id), "--json").output)
    assert [d["held"] for d in detail["deliveries"]] == [
        None, {"reason": "Spruce maintenance, ticket 4411", "held_by": OPERATOR, "held_at": _held_at(app).isoformat()}]

    resumed = invoke(app, "destinations", "resume", "spruce", "--yes")
    assert resumed.exit_code == 0, resumed.output
    lines = resumed.output.splitlines()
    assert lines[0] == f"spruce is held since {_held_at(app):%Y-%m-%d %H:%M:%S} UTC by {OPERATOR}: " \
                       "Spruce maintenance, ticket 4411"
    assert lines[1] == "held: 3 deliveries: live 3"
    # A reward's note costs Spruce 5 calls at most (search, contact, conversation, note, a read).
    assert lines[2].startswith("estimate: up to 15 vendor calls, about 0s at 1000/1s with no other traffic")
    assert lines[3] == "resumed spruce: 3 deliveries go, live before catch-up, within its limits"

    assert dispatch_stored(app) == 3
    run_pending(app)
    assert [(d.status, d.attempts) for d in of(app, "spruce")] == [("succeeded", 1)] * 3
    notes = [r for r in sandbox_state(sandbox)["requests"]
             if r["vendor"] == "spruce" and (r["idempotency_key"] or "").startswith("relay-note-")]
    assert sorted(r["idempotency_key"] for r in notes) == sorted(f"relay-note-{d.id}" for d in spruce)
    assert [e.status for e in events(app)] == ["done"] * 3

    hold_entry, resume_entry = audit_rows(app)
    assert (hold_entry.actor, hold_entry.interface, hold_entry.action, hold_entry.outcome) == (
        OPERATOR, "cli", "destinations.hold", "ok")
    assert hold_entry.targets == {"destination": "spruce"}
    assert hold_entry.details == {"reason": "Spruce maintenance, ticket 4411", "pending": 0}
    assert (resume_entry.action, resume_entry.outcome, resume_entry.targets) == (
        "destinations.resume", "ok", {"destination": "spruce"})
    assert resume_entry.details["pending"] == 3 and resume_entry.details["pending_by_lane"] == {"live": 3}
    assert resume_entry.details["held_by"] == OPERATOR


def _held_at(app):
    with Runtime.of(app).db.session() as session:
        return session.scalars(sa.select(DestinationHold.held_at).order_by(DestinationHold.id.desc())).first()


def test_a_delivery_published_before_the_hold_waits_without_an_attempt_and_the_sweep_leaves_it(app, sandbox):
    run_sweep(app)  # its first: it marks the broker as seen
    post_rewards(app, 1)
    assert dispatch_stored(app) == 2  # both published: a worker has not taken them yet
    hold(app)
    [spruce] = of(app, "spruce")
    assert spruce.enqueued_at is not None

    # The sweep does not take a held delivery's message for lost, however long it waits (Sprig's it does).
    assert run_sweep(app, now=utcnow() + timedelta(minutes=5))["handed_back"] == 1
    assert of(app, "spruce")[0].enqueued_at is not None and of(app, "sprig")[0].enqueued_at is None

    assert deliver(app, spruce.id) == "held"
    [returned] = of(app, "spruce")
    assert (returned.status, returned.attempts, returned.deferrals, returned.enqueued_at) == ("pending", 0, 0, None)
    assert (returned.last_error, returned.progress) == (None, {})
    assert dispatch_stored(app) == 1 and of(app, "spruce")[0].enqueued_at is None  # Sprig's again, not Spruce's
    assert spruce_calls(sandbox) == 0

    destinations.resume(Runtime.of(app), "spruce", actor=Actor("ops", "cli"))
    assert dispatch_stored(app) == 1
    assert deliver(app, spruce.id) == "succeeded" and of(app, "spruce")[0].attempts == 1


def hold(app, name: str = "spruce", reason: str | None = "maintenance") -> None:
    destinations.hold(Runtime.of(app), name, reason=reason, actor=Actor(OPERATOR, "cli"))


def test_a_hold_outlives_the_app_that_made_it(relay_app, sandbox):
    first = relay_app(RELAY_OPERATOR=OPERATOR)
    assert invoke(first, "destinations", "hold", "spruce").exit_code == 0
    Runtime.of(first).close()

    restarted = relay_app(RELAY_OPERATOR=OPERATOR)  # every process built anew: the store remembers
    post_rewards(restarted, 2)
    assert dispatch_stored(restarted) == 2
    run_pending(restarted)
    assert [d.status for d in of(restarted, "spruce")] == ["pending"] * 2 and spruce_calls(sandbox) == 0
    [found] = destinations.holds(Runtime.of(restarted)).values()
    assert (found.destination, found.reason, found.held_by) == ("spruce", None, OPERATOR)
    status = invoke(restarted, "destinations", "status")
    assert f"spruce: held since {found.held_at:%Y-%m-%d %H:%M:%S} UTC by {OPERATOR}\n" in status.output


def test_the_time_held_does_not_count_towards_a_deliverys_age(app, sandbox):
    """RELAY_RETRY_MAX_AGE (24 h) gives up on a delivery that keeps failing; a delivery held for
    most of its 30 hours is 6 hours old when it fails after the resume, and is retried."""
    post_rewards(app, 1)
    [spruce] = of(app, "spruce")
    now = utcnow()
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).values(created_at=now - timedelta(hours=30)))
        session.add(DestinationHold(destination="spruce", held_by=OPERATOR, held_at=now - timedelta(hours=28),
                                    resumed_by=OPERATOR, resumed_at=now - timedelta(hours=4)))
        session.commit()
    sandbox.configure(faults=[NOTE_POST | {"status": 500, "times": 1}])
    assert deliver(app, spruce.id) == "retried"

    [sprig] = of(app, "sprig")  # never held: its 30 hours are its own
    sandbox.configure(faults=[{"vendor": "sprig", "status": 500, "times": 1}])
    assert deliver(app, sprig.id) == "failed"
    assert of(app, "sprig")[0].last_error.startswith("gave up after 30.0 h")


def test_status_shows_each_destination_its_window_daily_remaining_backlog_and_estimate(relay_app, sandbox):
    # A minute's window: the first reward's calls are still in it when status reads it, however
    # slowly a loaded machine gets there (a second's window was over before, once in CI).
    app = relay_app(RELAY_OPERATOR=OPERATOR, SPRUCE_RATE_LIMIT="1000/60s")
    sandbox.configure(rate_limit={"spruce": {"limit": 100_000, "daily_limit": 400}})
    post_rewards(app, 1)
    dispatch_stored(app)
    run_pending(app)  # Spruce's answers state the day's remaining calls
    hold(app, reason="vendor asked us to pause")
    post_rewards(app, 4, first=1)

    found = json.loads(invoke(app, "destinations", "status", "--json").output)
    sprig, spruce = found
    assert (sprig["name"], sprig["state"], sprig["held"]) == ("sprig", "delivering", None)
    assert sprig["estimate"] == {"calls_at_most": 4, "seconds": 0.0, "limit": "1000/1s", "daily_remaining": None,
                                 "beyond_today": False}  # a reward is one Sprig call
    assert sprig["backlog"] == {"pending": 4, "in_flight": 0, "oldest_waiting_s": sprig["backlog"]["oldest_waiting_s"],
                                "pending_by_lane": {"live": 4}}
    assert spruce["state"] == "held" and spruce["held"]["reason"] == "vendor asked us to pause"
    assert spruce["calls"] == {"state": "delivering", "detail": None}
    assert spruce["window"]["limit"] == "1000/60s" and spruce["window"]["calls_in_window"] >= 4
    remaining = spruce["daily"]["remaining"]
    assert spruce["daily"]["limit"] == 400 and 390 <= remaining < 400  # the first reward cost a few calls
    assert spruce["backlog"]["pending"] == 4 and spruce["backlog"]["pending_by_lane"] == {"live": 4}
    assert spruce["estimate"] == {"calls_at_most": 20, "seconds": 0.0, "limit": "1000/60s",
                                  "daily_remaining": remaining, "beyond_today": False}

    text = invoke(app, "destinations", "status").output
    assert "sprig: delivering\n" in text and "spruce: held since " in text
    assert f"  today: {remaining} of 400 calls remain, as the vendor last said\n" in text
    assert "  backlog: 4 waiting (4 pending: live 4, 0 in flight), the oldest for " in text
    assert "  estimate: up to 20 vendor calls, about 0s at 1000/60s with no other traffic\n" in text


def test_the_estimate_says_when_the_day_has_fewer_calls_left_than_the_backlog_may_need(app, sandbox):
    sandbox.configure(rate_limit={"spruce": {"limit": 100_000, "daily_limit": 12}})
    post_rewards(app, 1)
    dispatch_stored(app)
    run_pending(app)
    hold(app)
    post_rewards(app, 3, first=1)
    [spruce] = [d for d in destinations.status(Runtime.of(app)) if d.name == "spruce"]
    assert spruce.estimate is not None and spruce.estimate.beyond_today
    resumed = invoke(app, "destinations", "resume", "spruce", "--yes").output
    assert f"; spruce said {spruce.estimate.daily_remaining} calls remain today: what they do not cover waits " \
           "for its daily window to turn" in resumed


def test_status_stats_and_show_say_what_a_reserve_parked_by_lane_and_why(relay_app, sandbox):
    app = relay_app(RELAY_OPERATOR=OPERATOR, **RESERVES)
    parked = park_spruce(app, sandbox)

    sprig, spruce = json.loads(invoke(app, "destinations", "status", "--json").output)
    assert sprig["parked"] == {"count": 0, "by_lane": {}, "reasons": []}
    assert spruce["state"] == "delivering"  # live goes on at the vendor's pace; what waits is in `parked`
    assert spruce["parked"] == {
        "count": 4,
        "by_lane": {"live": 2, "retry": 1, "catch-up": 1},
        "reasons": [{"lane": "live", "reason": LIVE_PARKED, "count": 2},
                    {"lane": "retry", "reason": RETRY_PARKED, "count": 1},
                    {"lane": "catch-up", "reason": CATCH_UP_PARKED, "count": 1}],
    }
    day = spruce["daily"]  # the reserves' reading in Redis: the newest answer's
    assert day["limit"] == DAILY_LIMIT and day["remaining"] == DAILY_LIMIT - budget_spent(sandbox)
    assert day["read_at"] and day["turned_over_at"] is None and day["day_s"] is None

    text = invoke(app, "destinations", "status").output
    assert "spruce: delivering\n  parked: 2 live, no attempt spent: Spruce's daily remaining at its live reserve " \
           "(20%)\n  parked: 1 retry, no attempt spent: Spruce's daily remaining at its retry reserve (20%)\n" \
           "  parked: 1 catch-up, no attempt spent: Spruce's daily remaining at its catch-up reserve (25%)\n" in text
    assert f"  today: {day['remaining']} of {DAILY_LIMIT} calls remain, as the vendor last said\n" in text

    stats = invoke(app, "events", "stats").output
    parked_table = stats[stats.index("Parked by a reserve now (pending, no attempt spent)"):]
    assert [lane in parked_table for lane in (" live ", " retry ", " catch-up ")] == [True] * 3
    stats_json = json.loads(invoke(app, "events", "stats", "--json").output)
    assert stats_json["parked_by_destination"] == {"spruce": spruce["parked"]}

    [catch_up] = [d for d in deliveries(app) if d.id == parked.catch_up]
    shown = invoke(app, "events", "show", str(catch_up.event_id)).output
    assert f"delivery {parked.catch_up} → spruce: pending" in shown
    assert f"    last error: {CATCH_UP_PARKED}\n" in shown


def budget_spent(sandbox) -> int:
    return sandbox_state(sandbox)["budgets"]["spruce"]["relay"]


def test_holding_twice_keeps_the_first_hold_and_resuming_what_is_not_held_changes_nothing(app):
    runtime = Runtime.of(app)
    hold(app, reason="first")
    again = invoke(app, "destinations", "hold", "spruce", "--reason", "second")
    assert again.exit_code == 0
    assert again.output.startswith("spruce is already held since ") and again.output.endswith(
        f"by {OPERATOR}: first (unchanged)\n")
    assert [h.reason for h in destinations.holds(runtime).values()] == ["first"]

    assert invoke(app, "destinations", "resume", "spruce", "--yes").exit_code == 0
    not_held = invoke(app, "destinations", "resume", "spruce", "--yes")
    assert (not_held.exit_code, not_held.output) == (0, "spruce is not held: nothing to resume\n")
    assert destinations.resume(runtime, "spruce", actor=Actor("ops", "cli")).changed is False
    assert [(e.action, e.outcome, e.reason) for e in audit_rows(app)] == [
        ("destinations.hold", "ok", None),
        ("destinations.hold", "refused", "already held"),
        ("destinations.resume", "ok", None),
        ("destinations.resume", "refused", "not held"),
    ]


def test_a_bad_name_or_reason_is_exit_2_naming_it_and_changes_nothing(app):
    for command in (["hold", "spruse"], ["resume", "spruse", "--yes"]):
        result = app.test_cli_runner().invoke(web.cli.main, ["destinations", *command])
        assert result.exit_code == 2, result.output
        assert "Invalid value for NAME: no destination is named 'spruse': the destinations are sprig, spruce" \
               in " ".join(result.output.split())
    result = app.test_cli_runner().invoke(web.cli.main, ["destinations", "hold", "spruce", "--reason",
                                                         "ann@example.com complained"])
    assert result.exit_code == 2 and "Invalid value for --reason: the reason holds an email address" in result.output
    long = app.test_cli_runner().invoke(web.cli.main, ["destinations", "hold", "spruce", "--reason", "x" * 201])
    assert long.exit_code == 2 and "longer than 200 characters" in long.output
    assert destinations.holds(Runtime.of(app)) == {} and audit_rows(app) == []


def test_resume_asks_first_and_without_a_terminal_wants_yes(app, monkeypatch):
    hold(app)
    refused = app.test_cli_runner().invoke(web.cli.main, ["destinations", "resume", "spruce"])
    assert refused.exit_code == 2
    assert "resume asks first, and there is no terminal to ask: add --yes" in refused.output
    assert "held: 0 deliveries" in refused.output  # what is held was shown first
    monkeypatch.setattr(web.cli.destinations, "_interactive", lambda: True)
    declined = app.test_cli_runner().invoke(web.cli.main, ["destinations", "resume", "spruce"], input="n\n")
    assert declined.exit_code == 1 and "Resume spruce? [y/N]" in declined.output
    assert "spruce" in destinations.holds(Runtime.of(app))
    confirmed = app.test_cli_runner().invoke(web.cli.main, ["destinations", "resume", "spruce"], input="y\n")
    assert confirmed.exit_code == 0 and "resumed spruce: 0 deliveries go" in confirmed.output
    assert destinations.holds(Runtime.of(app)) == {}
    assert [(e.action, e.outcome) for e in audit_rows(app)] == [("destinations.hold", "ok"),
                                                                ("destinations.resume", "ok")]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at_0014(request, tmp_path, migration_database):
    with store_at(request.param, tmp_path, "0014") as db:
        yield db


def test_0015_adds_the_holds_as_the_models_declare_one_current_per_destination_and_can_be_downgraded(store_at_0014):
    db = store_at_0014
    db.upgrade()
    table = Base.metadata.tables["destination_holds"]
    with db.engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert {c["name"] for c in inspector.get_columns("destination_holds")} == set(table.c.keys())
        assert {i["name"] for i in inspector.get_indexes("destination_holds")} == {i.name for i in table.indexes}
    with db.engine.begin() as conn:
        values = {"destination": "spruce", "held_by": "ops", "at": utcnow()}
        conn.execute(sa.text("INSERT INTO destination_holds (destination, held_by, held_at, resumed_at, resumed_by) "
                             "VALUES (:destination, :held_by, :at, :at, :held_by)"), values)
        conn.execute(sa.text("INSERT INTO destination_holds (destination, held_by, held_at) "
                             "VALUES (:destination, :held_by, :at)"), values)
        with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():  # a second current hold
            conn.execute(sa.text("INSERT INTO destination_holds (destination, held_by, held_at) "
                                 "VALUES (:destination, :held_by, :at)"), values)
    db.downgrade("0014")
    with db.engine.connect() as conn:
        assert "destination_holds" not in sa.inspect(conn).get_table_names()
