"""`relay sparkloop webhooks list | register | remove`, through Flask's CLI runner against the
sandbox's SparkLoop API v2 over HTTP, with real Redis for the shared throttle."""
from __future__ import annotations

import json
import time

import httpx
import pytest

import workers.classify
import workers.guard
import workers.sparkloop.retry

from sandbox import SandboxSettings
from testbed.apps import fresh_services, make_app, sandbox_state
from web.cli import main
from workers.sparkloop.client import SparkLoopClient
from workers.sparkloop.webhooks import API_EVENTS, DASHBOARD_ONLY_EVENTS
from workers.vendor_errors import VendorError
from relay.runtime import Runtime

API_KEY = SandboxSettings().sparkloop_api_key
PUBLIC_URL = "https://relay.example.com"
RELAY_HOOK = f"{PUBLIC_URL}/webhooks/sparkloop"
# Another integration's webhook, its secret in the path: never printed without --reveal.
OTHER_HOOK = "https://hooks.example.net/catch/4821/s3cr3tpath"


@pytest.fixture
def build(redis_url, sandbox, tmp_path):
    """Apps on SQLite (the store plays no part here), Redis and the sandbox, with variables changed."""
    environ = fresh_services(f"sqlite:///{tmp_path / 'relay.sqlite3'}", redis_url, sandbox, tmp_path / "instance")
    made = []

    def app(**overrides: str):
        made.append(make_app({**environ, "RELAY_PUBLIC_URL": PUBLIC_URL, **overrides}))
        return made[-1]

    yield app
    for each in made:
        Runtime.of(each).close()  # its metrics flushed before the next test empties Redis


def run(app, *args: str, input: str | None = None):
    # Wide enough for rich's tables not to wrap an id.
    result = app.test_cli_runner().invoke(main, ["sparkloop", "webhooks", *args], input=input,
                                          env={"COLUMNS": "200"})
    assert "Traceback" not in result.output, result.output
    assert API_KEY not in result.output
    return result


def held(sandbox) -> list[dict]:
    """What SparkLoop holds, newest first, read through its API."""
    response = httpx.get(f"{sandbox.sparkloop_url}/webhooks", headers={"X-Api-Key": API_KEY}, timeout=5)
    return response.json()["webhooks"]


def create(sandbox, url: str, **events: bool) -> dict:
    response = httpx.post(f"{sandbox.sparkloop_url}/webhooks", headers={"X-Api-Key": API_KEY},
                          json={"url": url, **events}, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["webhook"]


def writes(sandbox) -> list[dict]:
    return [r for r in sandbox_state(sandbox)["requests"]
            if r["vendor"] == "sparkloop" and r["method"] in ("POST", "PUT", "DELETE")]


def test_every_command_has_help(build):
    app = build()
    for args in ([], ["list"], ["register"], ["remove"]):
        result = run(app, *args, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, result.output


# --- register -------------------------------------------------------------------------------


def test_register_creates_relays_webhook_with_the_four_api_events_and_names_the_other_three(build, sandbox):
    result = run(build(), "register")

    assert result.exit_code == 0, result.output
    [webhook] = held(sandbox)
    assert webhook["url"] == RELAY_HOOK
    assert webhook["events"] == dict.fromkeys(API_EVENTS, True)
    assert f"Registered {webhook['uuid']} for {RELAY_HOOK}" in result.output
    assert "dashboard" in result.output
    assert all(name in result.output for name in DASHBOARD_ONLY_EVENTS)
    assert set(DASHBOARD_ONLY_EVENTS) == {"new_partner_pending_referral", "new_offer_lead", "sync_subscriber"}


def test_register_twice_changes_nothing_the_second_time(build, sandbox):
    app = build()
    assert run(app, "register").exit_code == 0
    before = len(writes(sandbox))

    again = run(app, "register")

    assert again.exit_code == 0, again.output
    assert "nothing changed" in again.output
    assert len(held(sandbox)) == 1
    assert len(writes(sandbox)) == before


def test_register_switches_on_what_an_existing_webhook_lacks_instead_of_adding_one(build, sandbox):
    existing = create(sandbox, RELAY_HOOK + "/", new_referral=True, reward_unlocked=False)

    result = run(build(), "register")

    assert result.exit_code == 0, result.output
    [webhook] = held(sandbox)
    assert webhook["uuid"] == existing["uuid"]
    assert webhook["events"] == dict.fromkeys(API_EVENTS, True)
    assert "switched on: reward_unlocked, new_partner_referral, reward_redeemed" in result.output


def test_register_takes_url_over_relay_public_url(build, sandbox):
    result = run(build(), "register", "--url", "https://elsewhere.example.org/webhooks/sparkloop")

    assert result.exit_code == 0, result.output
    assert [w["url"] for w in held(sandbox)] == ["https://elsewhere.example.org/webhooks/sparkloop"]


@pytest.mark.parametrize("base_url", [PUBLIC_URL, PUBLIC_URL + "/", f"{PUBLIC_URL}/webhooks/sparkloop/"])
def test_register_takes_the_base_url_as_relay_public_url_does(build, sandbox, base_url):
    result = run(build(RELAY_PUBLIC_URL=""), "register", "--url", base_url)

    assert result.exit_code == 0, result.output
    assert [w["url"] for w in held(sandbox)] == [RELAY_HOOK]
    assert f"for {RELAY_HOOK}" in result.output


@pytest.mark.parametrize("overrides, args, named", [
    ({}, ["--url", "https://relay.example.com/hooks/sparkloop"], "/hooks/sparkloop"),
    ({}, ["--url", "https://relay.example.com/webhooks"], "/webhooks"),
    ({}, ["--url", "https://relay.example.com/webhooks/sparkloop?x=1"], "query"),
    ({}, ["--url", "http://relay.example.com/webhooks/sparkloop"], "--url"),
    ({}, ["--url", "relay.example.com/webhooks/sparkloop"], "--url"),
    ({"RELAY_PUBLIC_URL": "http://relay.example.com"}, [], "RELAY_PUBLIC_URL"),
    ({"RELAY_PUBLIC_URL": ""}, [], "RELAY_PUBLIC_URL"),
    ({"SPARKLOOP_API_KEY": ""}, [], "SPARKLOOP_API_KEY"),
])
def test_register_refuses_bad_input_with_exit_2_before_any_call(build, sandbox, overrides, args, named):
    result = run(build(**overrides), "register", *args)

    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and named in errors[0], result.output
    assert [r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sparkloop"] == []


def test_a_wrong_key_is_one_line_and_exit_1(build, sandbox):
    result = run(build(SPARKLOOP_API_KEY="not-the-key"), "register")

    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1
    assert "SparkLoop refused SPARKLOOP_API_KEY" in result.output and "401" in result.output
    assert "not-the-key" not in result.output
    assert held(sandbox) == []


# --- list -----------------------------------------------------------------------------------


def test_list_shows_webhooks_newest_first_with_their_events_and_hides_other_urls(build, sandbox):
    ours = create(sandbox, RELAY_HOOK, new_referral=True, reward_unlocked=True)
    other = create(sandbox, OTHER_HOOK, reward_redeemed=True)
    app = build()

    rows = json.loads(run(app, "list", "--json").output)

    assert [row["uuid"] for row in rows] == [other["uuid"], ours["uuid"]]
    assert rows[0] == {"uuid": other["uuid"], "url": "https://hooks.example.net/…", "relay": False,
                       "events": {"new_referral": None, "reward_unlocked": None,
                                  "new_partner_referral": None, "reward_redeemed": True}}
    assert rows[1]["url"] == RELAY_HOOK and rows[1]["relay"] is True
    table = run(app, "list")
    assert table.exit_code == 0, table.output
    assert "s3cr3tpath" not in table.output and "(Relay)" in table.output
    assert ours["uuid"] in table.output and "new_partner_referral" in table.output
    revealed = json.loads(run(app, "list", "--json", "--reveal").output)
    assert revealed[0]["url"] == OTHER_HOOK


def test_list_says_when_there_is_none(build):
    result = run(build(), "list")
    assert result.exit_code == 0 and "SparkLoop holds no webhook" in result.output


def test_list_waits_out_a_429(build, sandbox, monkeypatch):
    """SparkLoop's 429 says not how long (no header is documented): Relay waits its default
    (10 s; 1 s here)."""
    monkeypatch.setattr(workers.guard, "THROTTLED_DEFAULT_WAIT_S", 1.0)
    monkeypatch.setattr(workers.classify, "THROTTLED_DEFAULT_WAIT_S", 1.0)
    sandbox.configure(faults=[{"vendor": "sparkloop", "status": 429, "times": 1,
                               "method": "GET", "path_prefix": "/webhooks"}])
    create(sandbox, RELAY_HOOK, new_referral=True)

    result = run(build(), "list", "--json")

    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 1
    statuses = [r["status"] for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sparkloop"]
    assert statuses[-2:] == [429, 200]


def test_a_long_wait_is_reported_not_slept_through(build, sandbox):
    """One call per 10 minutes: register's list takes the slot, its write would wait for the next."""
    started = time.monotonic()

    result = run(build(SPARKLOOP_RATE_LIMIT="1/600s"), "register")

    assert time.monotonic() - started < 10
    assert result.exit_code == 1 and "on hold" in result.output, result.output
    assert result.output.count("\n") == 1
    assert writes(sandbox) == [] and held(sandbox) == []


def test_calls_share_the_throttle_with_every_process(build, sandbox):
    """Two commands, one slot per 3 s between them (the throttle lives in Redis): the second
    waits for its slot instead of calling at once."""
    app = build(SPARKLOOP_RATE_LIMIT="1/3s")
    started = time.monotonic()
    assert run(app, "list").exit_code == 0
    assert run(build(SPARKLOOP_RATE_LIMIT="1/3s"), "list").exit_code == 0

    assert time.monotonic() - started >= 2.5
    assert len([r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sparkloop"]) == 2


def test_a_read_is_retried_after_a_server_error_and_a_write_is_not(build, sandbox, monkeypatch):
    """One policy for SparkLoop's API (workers.sparkloop.retry): the classifier's "retry" repeats
    a read; a write whose answer was lost may have been done, so it is reported, not repeated."""
    monkeypatch.setattr(workers.sparkloop.retry, "BACKOFF_BASE_S", 0.05)
    sandbox.configure(faults=[{"vendor": "sparkloop", "status": 503, "times": 1, "method": "GET",
                               "path_prefix": "/webhooks"},
                              {"vendor": "sparkloop", "status": 503, "times": 1, "method": "POST",
                               "path_prefix": "/webhooks"}])

    result = run(build(), "register")

    assert result.exit_code == 1, result.output
    assert "503" in result.output and "may have acted on it" in result.output
    calls = [(r["method"], r["status"]) for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sparkloop"]
    assert calls == [("GET", 503), ("GET", 200), ("POST", 503)]


def test_a_read_gives_up_after_the_policys_failures_as_backfill_does(build, sandbox, monkeypatch):
    monkeypatch.setattr(workers.sparkloop.retry, "BACKOFF_BASE_S", 0.05)
    sandbox.configure(faults=[{"vendor": "sparkloop", "status": 500, "times": None}])

    result = run(build(), "list")

    assert result.exit_code == 1, result.output
    assert result.output == "Error: sparkloop GET /webhooks -> 500: injected fault\n"
    calls = [r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "sparkloop"]
    assert len(calls) == workers.sparkloop.retry.MAX_FAILURES


# --- remove ---------------------------------------------------------------------------------


def test_remove_deletes_that_webhook_only(build, sandbox):
    ours = create(sandbox, RELAY_HOOK, new_referral=True)
    other = create(sandbox, OTHER_HOOK, new_referral=True)

    result = run(build(), "remove", other["uuid"], "--yes")

    assert result.exit_code == 0, result.output
    assert f"Removed {other['uuid']}" in result.output and "s3cr3tpath" not in result.output
    assert [w["uuid"] for w in held(sandbox)] == [ours["uuid"]]


def test_remove_asks_first_and_a_no_changes_nothing(build, sandbox):
    ours = create(sandbox, RELAY_HOOK, new_referral=True)

    declined = run(build(), "remove", ours["uuid"], input="n\n")

    assert declined.exit_code == 1
    assert "Relay will stop receiving SparkLoop's events" in declined.output
    assert [w["uuid"] for w in held(sandbox)] == [ours["uuid"]]
    accepted = run(build(), "remove", ours["uuid"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert held(sandbox) == []


def test_remove_of_an_unknown_id_is_exit_2_and_changes_nothing(build, sandbox):
    ours = create(sandbox, RELAY_HOOK, new_referral=True)

    result = run(build(), "remove", "webhook_0000000000", "--yes")

    assert result.exit_code == 2, result.output
    assert "webhook_0000000000" in result.output
    assert [w["uuid"] for w in held(sandbox)] == [ours["uuid"]]
    assert writes(sandbox) == [r for r in writes(sandbox) if r["method"] == "POST"]  # only the seeding


# --- the sandbox's side of the contract ------------------------------------------------------


def test_the_sandbox_refuses_non_https_urls_as_sparkloop_does(sandbox):
    sandbox.reset()
    with SparkLoopClient(sandbox.sparkloop_url, API_KEY, timeout=5) as client:
        with pytest.raises(VendorError) as refused:
            client.create_webhook("http://relay.example.com/webhooks/sparkloop")
        assert refused.value.status == 400 and "Url must start with https://" in str(refused.value)
        created = client.create_webhook(RELAY_HOOK, ("new_referral",))
        assert created.events == {"new_referral": True, "reward_unlocked": None,
                                  "new_partner_referral": None, "reward_redeemed": None}
        assert client.switch_on(created.uuid, ("reward_redeemed",)).switched_on == ("new_referral", "reward_redeemed")
        assert client.delete_webhook(created.uuid) is True
        assert client.delete_webhook(created.uuid) is False
        assert client.list_webhooks() == []
