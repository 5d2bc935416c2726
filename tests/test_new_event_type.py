"""A new SparkLoop event type is one spec entry in schemas.events, and one entry in each
destination's `receives` that should get it (workers/<vendor>/): registered here (as a future
`webinar_registered` would be), it is validated, de-duplicated, routed and delivered to both
vendors with no other code change. Its people are declared in the spec too: under keys
no other type uses (`course_enrolled`'s student and mentor), they are delivered, found and
erased by `relay subscribers forget`, and seen by `relay backfill`'s de-duplication."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from marshmallow import fields

from relay.models import EventSubject, DestinationLink, utcnow
from relay.subjects import email_digest, id_digest
from relay.runtime import Runtime
from schemas.events import EVENTS, EventSpec
from schemas.fields import OpenSchema, TrimmedString
from schemas.sparkloop import REWARD_PEOPLE, EventSchema, PeopleAt, ReferralProgramSubscriberSchema
from workers.sprig.sends import SprigUser
from workers.spruce.sends import SpruceContact, SpruceNote
from testbed.apps import deliveries, events, post_event, run_pending, sandbox_state
from testbed.examples import load_fixture
from web.cli import main
from workers.sprig import DESTINATION as SPRIG
from workers.spruce import DESTINATION as SPRUCE

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
    people=REWARD_PEOPLE,
)
SENDS = {
    SPRIG: SprigUser(lambda data, role: {"last_webinar": data["webinar"]["id"]}),
    SPRUCE: SpruceNote(lambda data: f"SparkLoop: registered for the webinar {data['webinar']['title']}."),
}


def register(monkeypatch, event_type: str, spec: EventSpec, sends: dict) -> None:
    monkeypatch.setitem(EVENTS, event_type, spec)
    for destination, what in sends.items():
        monkeypatch.setitem(destination.receives, event_type, what)


@pytest.fixture
def registered(monkeypatch):
    register(monkeypatch, TYPE, SPEC, SENDS)


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


# --- people under keys of their own -------------------------------------------------------------

COURSE = "course_enrolled"


class CourseSchema(OpenSchema):
    id = TrimmedString(required=True)


class CourseEnrolledSchema(EventSchema):
    student = fields.Nested(ReferralProgramSubscriberSchema, required=True)
    mentor = fields.Nested(ReferralProgramSubscriberSchema, required=True)
    course = fields.Nested(CourseSchema, required=True)


COURSE_SPEC = EventSpec(
    schema=CourseEnrolledSchema(),
    identity=lambda data: [data["student"]["id"], data["course"]["id"]],
    people=PeopleAt("student", "mentor"),  # about the student; the mentor is named too
)
COURSE_SENDS = {SPRIG: SprigUser(lambda data, role: {"last_course": data["course"]["id"]}), SPRUCE: SpruceContact()}


def someone(first: str, n: int) -> dict:
    return {"id": f"sub_{first.lower()}{n}", "email": f"{first.lower()}.learner@example.com", "name": f"{first} Learner"}


ADA, MAX, ZOE = someone("Ada", 1), someone("Max", 2), someone("Zoe", 3)


def enrolled(student: dict, mentor: dict, course_id: str = "course_1") -> dict:
    return {"type": COURSE, "student": dict(student), "mentor": dict(mentor), "course": {"id": course_id}}


@pytest.fixture
def course(monkeypatch):
    register(monkeypatch, COURSE, COURSE_SPEC, COURSE_SENDS)


def subject_digests(app) -> set[tuple[int, str]]:
    with Runtime.of(app).db.session() as session:
        return set(session.execute(sa.select(EventSubject.event_id, EventSubject.digest)).all())


def forget(app, *args: str):
    result = app.test_cli_runner().invoke(main, ["subscribers", "forget", *args, "--yes"])
    assert result.exit_code == 0, result.output
    return result.output


def test_people_under_new_keys_are_delivered(course, client, app, sandbox):
    assert post_event(client, enrolled(ADA, MAX)).status_code == 200

    run_pending(app)

    assert [e.status for e in events(app)] == ["done"]
    vendors = sandbox_state(sandbox)
    users = vendors["sprig"]["users"]
    assert {email: user["attributes"]["sparkloop_last_course"] for email, user in users.items()} == {
        ADA["email"]: "course_1", MAX["email"]: "course_1"}
    # Spruce gets the person the event is about: the first its spec names.
    [contact] = vendors["spruce"]["contacts"]
    assert [address["value"] for address in contact["emailAddresses"]] == [ADA["email"]]


def test_forget_finds_and_erases_a_person_under_a_new_key(course, client, app, sandbox):
    post_event(client, enrolled(ADA, MAX))                 # Ada's, naming Max as mentor
    post_event(client, enrolled(ZOE, ADA, "course_2"))     # Zoe's, naming Ada as mentor
    post_event(client, enrolled(ZOE, MAX, "course_3"))     # neither names Ada
    run_pending(app)
    ada_event, zoe_with_ada, zoe_with_max = (e.id for e in events(app))
    ada = {email_digest(ADA["email"], None), id_digest(ADA["id"], None)}
    assert {event_id for event_id, digest in subject_digests(app) if digest in ada} == {ada_event, zoe_with_ada}

    output = forget(app, ADA["email"])

    assert "their events deleted: 1" in output and "anonymized: 1" in output
    assert ADA["email"] not in output
    remaining = {e.id: e for e in events(app)}
    assert set(remaining) == {zoe_with_ada, zoe_with_max}
    assert remaining[zoe_with_ada].payload["mentor"] == {"erased": True}
    assert remaining[zoe_with_ada].payload["student"] == ZOE
    assert not [digest for _, digest in subject_digests(app) if digest in ada]
    with Runtime.of(app).db.session() as session:
        keys = set(session.scalars(sa.select(DestinationLink.subscriber_key)))
    assert not [key for key in keys if ADA["id"] in key]


def test_forget_by_id_finds_the_email_a_new_key_holds(course, client, app, sandbox):
    post_event(client, enrolled(ADA, MAX))
    run_pending(app)

    assert "their events deleted: 1" in forget(app, ADA["id"])
    assert events(app) == []


def test_backfill_sees_people_under_new_keys_as_already_received(course, client, app, sandbox):
    post_event(client, enrolled(ADA, MAX))
    created = (utcnow() - timedelta(hours=1)).isoformat()
    sandbox.add_sparkloop_subscribers([
        {"uuid": ADA["id"], "email": "someone.else@example.com", "created_at": created},  # by id
        {"uuid": "sub_unmatched", "email": MAX["email"].upper(), "created_at": created},  # by email
        {"uuid": "sub_new", "email": "new@example.com", "created_at": created},
    ])

    result = app.test_cli_runner().invoke(main, ["backfill", "--since", "1d"])

    assert result.exit_code == 0, result.output
    assert "3 subscribers seen, 1 created, 2 skipped as already received" in result.output
    assert [e.payload["subscriber"]["id"] for e in events(app) if e.source == "backfill"] == ["sub_new"]
