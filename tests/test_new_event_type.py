"""A new SparkLoop event type is one spec entry in schemas.events: registered here (as a
future `webinar_registered` would be), it is validated, de-duplicated, routed and delivered
to both vendors with no other code change."""
from __future__ import annotations

import pytest
from marshmallow import fields

from schemas.events import EVENTS, EventSpec
from schemas.fields import OpenSchema, TrimmedString
from schemas.sparkloop import EventSchema, ReferralProgramSubscriberSchema, reward_people
from schemas.sprig import SprigUser
from schemas.spruce import SpruceNote
from tests.conftest import deliveries, events, load_fixture, post_event, run_pending, sandbox_state
from web.cli import main

TYPE = "webinar_registered"


class WebinarSchema(OpenSchema):
    id = TrimmedString(required=True)
    title = TrimmedString(allow_none=True)


class WebinarRegisteredSchema(EventSchema):
    subscriber = fields.Nested(ReferralProgramSubscriberSchema, required=True)
    webinar = fields.Nested(WebinarSchema, required=True)


SPEC = EventSpec(
    schema=WebinarRegisteredSchema(),
    identity=lambda data: [data["subscriber"]["id"], data["webinar"]["id"]],
    subscribers=reward_people,
    sends={
        "sprig": SprigUser(lambda data, role: {"last_webinar": data["webinar"]["id"]}),
        "spruce": SpruceNote(lambda data: f"SparkLoop: registered for the webinar {data['webinar']['title']}."),
    },
)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(EVENTS, TYPE, SPEC)


def webinar_payload(webinar_id: str = "web_1") -> dict:
    return {"type": TYPE, "subscriber": load_fixture("new_referral")["subscriber"],
            "webinar": {"id": webinar_id, "title": "Referral secrets"}}


def test_an_eighth_event_type_is_validated_deduplicated_routed_and_delivered(registered, client, app, sandbox):
    missing_webinar = {k: v for k, v in webinar_payload().items() if k != "webinar"}
    rejected = post_event(client, missing_webinar)
    assert rejected.status_code == 400
    assert rejected.get_json()["fields"] == {"webinar": ["Missing data for required field."]}

    assert post_event(client, webinar_payload()).status_code == 200
    assert post_event(client, webinar_payload()).status_code == 200  # SparkLoop's retry
    assert post_event(client, webinar_payload("web_2")).status_code == 200  # another webinar
    accepted = [e for e in events(app) if e.status != "invalid"]
    assert [(e.type, e.status) for e in accepted] == [(TYPE, "received")] * 2
    assert [d.destination for d in deliveries(app)] == ["sprig", "spruce"] * 2

    run_pending(app)

    assert sorted(e.status for e in events(app)) == ["done", "done", "invalid"]
    vendors = sandbox_state(sandbox)
    user = vendors["sprig"]["users"]["john.doe@email.com"]
    assert user["attributes"]["sparkloop_last_webinar"] == "web_2"
    assert [(e["event"], e["count"]) for e in user["events"]] == [(f"sparkloop_{TYPE}", 2)]
    [conversation] = vendors["spruce"]["conversations"]
    notes = [item["text"] for item in vendors["spruce"]["items"][conversation["id"]]]
    assert notes == ["SparkLoop: registered for the webinar Referral secrets."] * 2
    assert len(vendors["spruce"]["contacts"]) == 1


def test_a_replay_estimates_the_new_type_from_what_its_spec_sends(registered, client, app, sandbox):
    post_event(client, webinar_payload())
    run_pending(app)
    result = app.test_cli_runner().invoke(main, ["events", "replay", "--type", TYPE, "--force", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would replay 2 deliveries of 1 events" in result.output
    assert "sprig: up to 1 calls" in result.output  # one subscriber
    assert "spruce: up to 5 calls" in result.output  # a note: contact, conversation, note
