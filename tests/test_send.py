"""`relay send`: an example webhook of every type, posted over real HTTP to a served Relay, through
Flask's CLI runner; and its refusals, each one line."""
from __future__ import annotations

import json

import pytest

import web.cli.send
from relay.app import create_base_app
from relay.config import DEV_WEBHOOK_TOKEN
from schemas.events import EVENTS
from testbed.apps import TOKEN, events
from testbed.examples import load_fixture
from testbed.net import free_port, served
from web.cli import main


def send(app, *args):
    return app.test_cli_runner().invoke(main, ["send", *args], catch_exceptions=False)


def one_line_error(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line, line
    assert TOKEN not in result.output


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_each_type_lands_in_the_store_with_its_type(app, server, event_type):
    result = send(app, event_type, "--to", server)

    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"200 OK from {server}/webhooks/sparkloop: {event_type} sent (")
    assert TOKEN not in line and "@" not in line  # people by id only
    [event] = events(app)
    assert (event.type, event.status) == (event_type, "received")
    assert event.payload != load_fixture(event_type)  # a new subscriber, not the example's
    for role in ("subscriber", "referrer", "lead"):
        if person := event.payload.get(role):
            assert (f"{role} {person['id']}" if "id" in person else f"{role} without an id") in line


def test_two_sends_are_two_new_subscribers(app, server):
    first, second = (send(app, "reward_unlocked", "--to", server) for _ in range(2))
    assert first.exit_code == second.exit_code == 0, first.output + second.output

    stored = [event.payload for event in events(app)]
    assert len(stored) == 2
    example = load_fixture("reward_unlocked")
    ids = [payload["subscriber"]["id"] for payload in stored]
    emails = [payload["subscriber"]["email"] for payload in stored]
    assert len(set(ids)) == len(set(emails)) == 2 and example["subscriber"]["id"] not in ids
    assert all(email.startswith("john.doe+") and email.endswith("@example.com") for email in emails)
    assert [f"(subscriber {id})" in result.output for id, result in zip(ids, (first, second))] == [True, True]
    assert {k for k in stored[0] if stored[0][k] != example[k]} == {"coupon_code", "reward", "subscriber"}


def test_set_pins_fields_with_their_kind(app, server):
    result = send(app, "new_referral", "--to", server, "--set", "subscriber.email=Pinned@Example.com",
                  "--set", "referrer.tot_referrals=9", "--set", "referrer.referred=true")
    assert result.exit_code == 0, result.output
    [event] = events(app)
    assert event.payload["subscriber"]["email"] == "Pinned@Example.com"
    assert (event.payload["referrer"]["tot_referrals"], event.payload["referrer"]["referred"]) == (9, True)


def test_a_file_is_posted_as_it_is_so_a_second_send_is_a_duplicate(app, server, tmp_path):
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(load_fixture("reward_redeemed")))
    for _ in range(2):
        result = send(app, "--file", str(path), "--to", server)
        assert result.exit_code == 0, result.output
        assert result.output == f"200 OK from {server}/webhooks/sparkloop: reward_redeemed sent\n"
    [event] = events(app)
    assert event.payload == load_fixture("reward_redeemed")


def test_an_example_can_be_named_by_its_file(app, server):
    result = send(app, "reward_unlocked__legacy", "--to", server)
    assert result.exit_code == 0, result.output
    [event] = events(app)
    assert event.type == "reward_unlocked" and not {"referrals", "coupon_code"} & set(event.payload)


def test_the_dev_url_and_token_are_the_defaults(bare_app, monkeypatch):
    web_app = bare_app(SPARKLOOP_WEBHOOK_TOKEN=DEV_WEBHOOK_TOKEN)  # relay dev's, as it runs
    command_app = create_base_app({"RELAY_INSTANCE_PATH": web_app.instance_path})  # no token set
    with served(web_app) as url:
        monkeypatch.setattr(web.cli.send, "DEV_URL", f"{url}/webhooks/sparkloop")
        result = send(command_app, "sync_subscriber")
    assert result.exit_code == 0, result.output
    assert DEV_WEBHOOK_TOKEN not in result.output
    assert [event.type for event in events(web_app)] == ["sync_subscriber"]


def test_a_base_url_gets_the_webhook_path(app, server):
    assert send(app, "new_offer_lead", "--to", server + "/").exit_code == 0
    assert send(app, "new_offer_lead", "--to", server + "/webhooks/sparkloop").exit_code == 0
    assert [event.type for event in events(app)] == ["new_offer_lead"] * 2


# --- refused: one line, exit code 1 --------------------------------------------------------


def test_a_wrong_token_is_the_servers_401_without_the_token(app, server, relay_app):
    result = send(relay_app(SPARKLOOP_WEBHOOK_TOKEN="not-the-servers-token"), "new_referral", "--to", server)
    one_line_error(result, 1, "401 UNAUTHORIZED", "SparkLoop-Token")
    assert "not-the-servers-token" not in result.output
    assert events(app) == []


def test_an_invalid_payload_is_the_servers_400_with_its_fields(app, server):
    result = send(app, "reward_unlocked", "--to", server, "--set", "subscriber.email=not-an-email")
    one_line_error(result, 1, "400 BAD REQUEST", '"fields": {"subscriber": {"email": ["Not a valid email address."]}}')
    assert "not-an-email" not in result.output
    assert [event.status for event in events(app)] == ["invalid"]


def test_a_refused_connection_says_so(bare_app):
    url = f"http://127.0.0.1:{free_port()}"
    one_line_error(send(bare_app(), "new_referral", "--to", url), 1,
                   f"cannot reach {url}/webhooks/sparkloop: connection refused")


# --- usage: one line, exit code 2, nothing sent ---------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    (["no_such_type"], ["no example of 'no_such_type'", "new_offer_lead", "sync_subscriber"]),
    ([], ["say which event to send"]),
    (["new_referral", "--set", "subscriber.emial=x@example.com"], ["subscriber.emial", "did you mean subscriber.email?"]),
    (["new_referral", "--set", "nothing.here=1"], ["--set nothing.here: the new_referral example has no such field"]),
    (["new_referral", "--set", "subscriber.tot_referrals=many"], ["not a text field", "JSON"]),
    (["new_referral", "--set", "subscriber.email"], ["write PATH=VALUE"]),
    (["--file", "/nonexistent/payload.json"], ["--file /nonexistent/payload.json: cannot read it"]),
    (["new_referral", "--file", "PATH", "--set", "subscriber.email=a@example.com"], ["exclude each other"]),
    (["new_referral", "--file", "PATH"], ["holds a reward_unlocked event, not new_referral"]),
    (["new_referral", "--to", "ftp://example.com"], ["--to must be an http:// or https:// URL"]),
])
def test_bad_input_is_one_line_and_exit_code_2(bare_app, tmp_path, args, fragments):
    app = bare_app()
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(load_fixture("reward_unlocked")))
    args = [str(path) if arg == "PATH" else arg for arg in args]
    with served(app) as url:
        one_line_error(send(app, *args, *([] if "--to" in args else ["--to", url])), 2, *fragments)
    assert events(app) == []


def test_another_relay_needs_its_token(tmp_path):
    command_app = create_base_app({"RELAY_INSTANCE_PATH": str(tmp_path)})
    one_line_error(send(command_app, "new_referral", "--to", "https://relay.example.com"), 2,
                   "SPARKLOOP_WEBHOOK_TOKEN is not set", "https://relay.example.com/webhooks/sparkloop")
