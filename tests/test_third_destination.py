"""A destination is a plug-in: Ledger, declared in one folder alone (testbed/third_destination/)
and added to Relay by RELAY_PLUGINS, is configured from its own variables, planned and delivered
to, retried with its own error text, throttled by its own rate headers, replayed, asked to erase
a person, remembers an account per subscriber that `relay subscribers unlink` drops, and is
shown by `relay doctor` and `relay events stats`, with no other file naming it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from operations.audit import Actor
from operations.subscribers import erasing_vendors, forget, vendor_asks
from relay.config import ConfigError, load_config
from relay.runtime import Runtime
from testbed.apps import deliver, deliveries, events, make_due, post_event, run_pending
from testbed.examples import load_fixture
from schemas.sparkloop import Subscriber
from testbed.third_destination import ACCOUNT_ID, NAME, SETTINGS
from testbed.third_destination.endpoint import TOKEN, Served
from web.cli import main
from workers import identity
from workers.erasure import Person

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "testbed" / "third_destination"
# new_referral names the subscriber and the referrer: a record each.
PEOPLE = 2


@pytest.fixture
def ledger():
    served = Served()
    yield served.ledger
    served.stop()


@pytest.fixture
def with_ledger(relay_app, ledger):
    """A Relay with Ledger added (RELAY_PLUGINS) and configured, with some variables changed."""

    def build(**overrides: str):
        plugged = {"RELAY_PLUGINS": "testbed.third_destination", "LEDGER_URL": ledger.url, "LEDGER_TOKEN": TOKEN}
        return relay_app(**plugged | overrides)

    return build


def invoke(app, *args: str):
    result = app.test_cli_runner().invoke(main, list(args), env={"COLUMNS": "250"})
    assert "Traceback" not in result.output, result.output
    assert TOKEN not in result.output
    return result


def ledger_delivery(app):
    return next(d for d in deliveries(app) if d.destination == NAME)


def test_no_file_outside_its_folder_names_it():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    # This test, the proof, names it too.
    outside = [ROOT / name for name in listed if FOLDER not in (ROOT / name).parents and ROOT / name != Path(__file__)]
    assert len(outside) > 100  # the whole project
    assert [path for path in outside if path.is_file() and NAME in path.read_text(errors="replace").lower()] == []


def test_it_is_configured_from_its_own_variables(tmp_path, ledger):
    env = {"RELAY_PLUGINS": "testbed.third_destination", "LEDGER_URL": ledger.url, "LEDGER_TOKEN": TOKEN}
    config = load_config(env, instance_path=tmp_path)
    assert NAME in config.destinations and NAME in config.configured_destinations
    assert config.of(SETTINGS).rate.limit == 100

    unconfigured = load_config(env | {"LEDGER_TOKEN": ""}, instance_path=tmp_path)
    assert NAME in unconfigured.destinations and NAME not in unconfigured.configured_destinations

    with pytest.raises(ConfigError, match="LEDGER_RATE_LIMIT"):
        load_config(env | {"LEDGER_RATE_LIMIT": "fast"}, instance_path=tmp_path)
    with pytest.raises(ConfigError, match="RELAY_ROUTES"):  # routes name the known destinations only
        load_config(env | {"RELAY_ROUTES": json.dumps({"new_referral": ["nowhere"]})}, instance_path=tmp_path)
    routed = load_config(env | {"RELAY_ROUTES": json.dumps({"sync_subscriber": [NAME]})}, instance_path=tmp_path)
    assert routed.routes_override == {"sync_subscriber": (NAME,)}
    with pytest.raises(ConfigError, match="RELAY_PLUGINS"):
        load_config(env | {"RELAY_PLUGINS": "tests.no_such_destination"}, instance_path=tmp_path)


def test_it_is_planned_and_delivered_to(with_ledger, ledger):
    app = with_ledger()
    client = app.test_client()
    assert post_event(client, load_fixture("new_referral")).status_code == 200
    assert post_event(client, load_fixture("sync_subscriber")).status_code == 200  # not a type it receives
    assert sorted(d.destination for d in deliveries(app)) == [NAME, "sprig", "sprig", "spruce"]

    run_pending(app)

    assert {d.destination: d.status for d in deliveries(app)}[NAME] == "succeeded"
    assert [(r["kind"], r["event"]) for r in ledger.records] == [("referral", "new_referral")] * PEOPLE
    example = load_fixture("new_referral")
    assert {r["email"] for r in ledger.records} == {example["subscriber"]["email"], example["referrer"]["email"]}
    Runtime.of(app).metrics.flush()
    scraped = client.get("/metrics").get_data(as_text=True)
    assert f'relay_vendor_requests_total{{status="201",vendor="{NAME}"}} {PEOPLE}.0' in scraped
    assert f'relay_deliveries_total{{destination="{NAME}",outcome="succeeded"}} 1.0' in scraped

    unconfigured = with_ledger(LEDGER_TOKEN="")
    assert post_event(unconfigured.test_client(), load_fixture("new_referral")).status_code == 200
    assert NAME not in {d.destination for d in deliveries(unconfigured)[-2:]}


def test_a_refusal_is_retried_and_recorded_in_its_own_words(with_ledger, ledger):
    app = with_ledger()
    post_event(app.test_client(), load_fixture("new_referral"))
    ledger.next_answers.append((503, {"problem": {"code": "maintenance", "detail": "back soon"}}, {}))

    assert deliver(app, ledger_delivery(app).id) == "retried"

    failed_once = ledger_delivery(app)
    assert failed_once.status == "pending" and failed_once.attempts == 1
    assert "503 maintenance: back soon [req req-1]" in failed_once.last_error
    run_pending(app)
    assert ledger_delivery(app).status == "succeeded" and len(ledger.records) == PEOPLE


def test_its_own_rate_headers_throttle_it(with_ledger, ledger):
    app = with_ledger()
    post_event(app.test_client(), load_fixture("new_referral"))
    ledger.next_answers.append((429, {"problem": {"code": "slow_down"}}, {"Retry-After": "120"}))

    assert deliver(app, ledger_delivery(app).id) == "deferred"
    calls = ledger.calls
    make_due(app)
    assert deliver(app, ledger_delivery(app).id) == "deferred"  # held back here: Ledger is not called
    assert ledger.calls == calls and ledger.records == []

    stats = json.loads(invoke(app, "events", "stats", "--json").output)
    assert stats["vendors"][NAME]["paused_for_s"] > 60


def test_a_replay_sends_it_again(with_ledger, ledger):
    app = with_ledger()
    post_event(app.test_client(), load_fixture("new_referral"))
    run_pending(app)
    assert len(ledger.records) == PEOPLE

    dry = invoke(app, "events", "replay", "--type", "new_referral", "--force", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"{NAME}: up to {PEOPLE} calls" in dry.output
    replayed = invoke(app, "events", "replay", "--type", "new_referral", "--force", "--yes")
    assert replayed.exit_code == 0, replayed.output
    assert ledger_delivery(app).status == "pending"
    run_pending(app)

    assert ledger_delivery(app).status == "succeeded"
    # Sent again (a forced replay forgets the finished steps), under the same keys: one record each.
    assert ledger.calls == 2 * PEOPLE and len(ledger.records) == PEOPLE
    assert [e.status for e in events(app)] == ["done"]


def test_an_erasure_request_reaches_it(with_ledger, ledger):
    app = with_ledger()
    post_event(app.test_client(), load_fixture("new_referral"))
    run_pending(app)
    example = load_fixture("new_referral")
    person = Person.given(example["subscriber"]["email"])
    runtime = Runtime.of(app)
    assert NAME in erasing_vendors(runtime) and vendor_asks(runtime, person, NAME) == {"email": 1}

    forgotten = forget(runtime, person, named=person, actor=Actor.cli("test"), purge=(NAME,))

    assert forgotten.requests == {NAME: ["del_1"]}
    assert [r["email"] for r in ledger.records] == [example["referrer"]["email"]]
    assert forgotten.done.counts()["events_deleted"] == 1


def test_it_remembers_each_subscribers_account_and_unlink_drops_it(with_ledger, ledger):
    app = with_ledger()
    client = app.test_client()
    post_event(client, load_fixture("new_referral"))
    run_pending(app)
    assert len(ledger.accounts) == PEOPLE  # the first record of each opened their account
    subscriber = load_fixture("reward_unlocked")["subscriber"]  # the referral's subscriber again

    post_event(client, load_fixture("reward_unlocked"))
    run_pending(app)

    assert len(ledger.accounts) == PEOPLE
    [first, then] = [record["account"] for record in ledger.records if record["email"] == subscriber["email"]]
    assert first == then == opened(app, subscriber)  # remembered, and named in the next record
    dry = invoke(app, "subscribers", "unlink", subscriber["email"], "--destination", NAME, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "Links of person-" in dry.output and f"({NAME}):" in dry.output
    assert "would drop: Ledger account id" in dry.output and subscriber["email"] not in dry.output
    dropped = invoke(app, "subscribers", "unlink", subscriber["email"], "--destination", NAME)
    assert dropped.exit_code == 0, dropped.output
    assert "dropped: Ledger account id" in dropped.output

    replayed = invoke(app, "events", "replay", "--type", "reward_unlocked", "--force", "--yes")
    assert replayed.exit_code == 0, replayed.output
    run_pending(app)

    assert len(ledger.accounts) == PEOPLE + 1  # forgotten: its next record opened a new one
    assert {d.status for d in deliveries(app) if d.destination == NAME} == {"succeeded"}
    assert opened(app, subscriber) == ledger.accounts[-1]


def opened(app, subscriber: dict) -> str:
    """The account Relay remembers for the subscriber at Ledger."""
    return identity.recall(Runtime.of(app), NAME, Subscriber(id=subscriber["id"], email=subscriber["email"]))[ACCOUNT_ID]


def test_doctor_and_stats_show_it(with_ledger, ledger):
    app = with_ledger()
    checks = {c["name"]: c for c in json.loads(invoke(app, "doctor", "--json").output)["checks"]}
    assert checks["Ledger token"]["status"] == "ok" and "acct_1" in checks["Ledger token"]["detail"]

    wrong = with_ledger(LEDGER_TOKEN="not-the-token")
    checks = {c["name"]: c for c in json.loads(invoke(wrong, "doctor", "--json").output)["checks"]}
    assert checks["Ledger token"]["status"] == "failed" and "(401)" in checks["Ledger token"]["detail"]

    post_event(app.test_client(), load_fixture("new_referral"))
    run_pending(app)
    stats = json.loads(invoke(app, "events", "stats", "--json").output)
    assert stats["vendors"][NAME]["limit"] == "100/1s"
    assert stats["vendors"][NAME]["vendor_remaining"] == 100 - PEOPLE
