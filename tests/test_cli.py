"""The relay command, through Flask's CLI runner against the real database."""
from __future__ import annotations

import json

from tests.conftest import load_fixture, post_event
from web.cli import main


def invoke(app, *args):
    return app.test_cli_runner().invoke(main, list(args), catch_exceptions=False)


def test_events_list_json_has_the_documented_fields(client, app):
    post_event(client, load_fixture("new_referral"))
    post_event(client, {"type": "partner_referral_rejected"})

    result = invoke(app, "events", "list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [e["type"] for e in listed] == ["partner_referral_rejected", "new_referral"]
    newest_handled = listed[1]
    assert set(newest_handled) >= {"id", "type", "status", "received_at", "deliveries"}
    assert [
        {k: d[k] for k in ("destination", "status", "attempts", "last_error")}
        for d in newest_handled["deliveries"]
    ] == [
        {"destination": "sprig", "status": "pending", "attempts": 0, "last_error": None},
        {"destination": "spruce", "status": "pending", "attempts": 0, "last_error": None},
    ]


def test_events_list_filters_by_status(client, app):
    post_event(client, load_fixture("new_referral"))
    post_event(client, {"type": "partner_referral_rejected"})
    listed = json.loads(invoke(app, "events", "list", "--status", "unhandled", "--json").output)
    assert [e["status"] for e in listed] == ["unhandled"]


def test_events_show_json_includes_the_payload(client, app):
    payload = load_fixture("reward_redeemed")
    post_event(client, payload)
    event_id = json.loads(invoke(app, "events", "list", "--json").output)[0]["id"]

    shown = json.loads(invoke(app, "events", "show", str(event_id), "--json").output)
    assert shown["id"] == event_id
    assert shown["payload"] == payload
    assert len(shown["deliveries"]) == 2


def test_events_show_unknown_id_is_a_usage_error(app):
    result = app.test_cli_runner().invoke(main, ["events", "show", "999"])
    assert result.exit_code == 2
    assert "no event with id 999" in result.output


def test_events_list_table_is_readable(client, app):
    post_event(client, load_fixture("new_referral"))
    result = invoke(app, "events", "list")
    assert result.exit_code == 0
    assert "new_referral" in result.output and "sprig=pending" in result.output


def test_unmigrated_database_is_one_clear_line_and_exit_1(environ, tmp_path):
    from web import create_app

    fresh = create_app({**environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"})
    result = fresh.test_cli_runner().invoke(main, ["events", "list"])
    assert result.exit_code == 1
    assert "relay db upgrade" in result.output
    assert "Traceback" not in result.output
