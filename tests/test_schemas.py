"""schemas/: SparkLoop validation, de-duplication keys, and the Sprig and Spruce bodies."""
from __future__ import annotations

import copy
import json

import pytest

from schemas.events import (
    DEFAULT_SENDS, DESTINATIONS, EVENTS, PersonPlaces, dedup_key, person_places, raw_dedup_key,
    sends, validate_event,
)
from schemas.sparkloop import Subscriber
from schemas.sprig import SprigUser, SprigUserSchema, sprig_user_body
from schemas.spruce import (
    SpruceNote, contact_body, note_conversation_body, note_message_body, search_by_email_body,
)
from testbed.examples import FIXTURE_NAMES, WITHOUT_EXAMPLE
from testbed.examples import load_fixture as fixture

RECEIVED_AT_MS = 1_700_000_000_123


def valid(payload: dict) -> dict:
    event_type, data, errors = validate_event(payload)
    assert errors is None, errors
    assert data is not None
    assert event_type == payload["type"]
    return data


def errors_of(payload: dict) -> dict:
    _, data, errors = validate_event(payload)
    assert data is None
    assert errors
    return errors


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_every_spec_sends_only_to_known_destinations(event_type):
    spec = EVENTS[event_type]
    assert spec.destinations and set(spec.destinations) <= set(DESTINATIONS)
    for destination in DESTINATIONS:
        assert sends(event_type, destination) == spec.sends.get(destination, DEFAULT_SENDS[destination])


def test_every_registered_type_has_an_example_and_every_example_a_registered_type():
    assert {fixture(name)["type"] for name in FIXTURE_NAMES} == set(EVENTS)


# --- Validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_validates_and_names_the_people_it_is_about(name):
    payload = fixture(name)
    people = EVENTS[payload["type"]].subscribers(valid(payload))
    assert people and all(person.email and person.email.endswith(("@email.com", "@example.com"))
                          for _, person in people)


def test_fixtures_include_the_legacy_reward_unlocked_without_referrals_and_coupon():
    payload = fixture("reward_unlocked__legacy")
    assert "referrals" not in payload and "coupon_code" not in payload
    data = valid(payload)
    assert data["reward"]["id"] == "reward_cdebf4f013"


def test_strings_are_trimmed_and_emails_trimmed_and_lower_cased():
    payload = fixture("reward_unlocked")
    payload["subscriber"]["email"] = "  John.Doe@Email.COM "
    data = valid(payload)
    assert data["subscriber"]["name"] == "John Doe"
    assert data["subscriber"]["email"] == "john.doe@email.com"


def test_shipping_details_is_an_open_dict_kept_as_sent():
    data = valid(fixture("reward_redeemed"))
    assert data["shipping_details"] == fixture("reward_redeemed")["shipping_details"]


def test_unknown_fields_are_kept_at_top_level_and_nested():
    payload = fixture("reward_unlocked")
    payload["brand_new_field"] = {"x": [1, 2]}
    payload["subscriber"]["utm_source"] = "newsletter"
    payload["reward"]["image_url"] = "https://example.com/r.png"
    data = valid(payload)
    assert data["brand_new_field"] == {"x": [1, 2]}
    assert data["subscriber"]["utm_source"] == "newsletter"
    assert data["reward"]["image_url"] == "https://example.com/r.png"
    assert json.loads(json.dumps(data)) == data


def test_optional_fields_may_be_null():
    payload = fixture("reward_redeemed")
    for key in ("referrals", "coupon_code", "reward_variant_name", "reward_variant_sku", "shipping_details"):
        payload[key] = None
    for key in ("first_name", "name", "referral_code", "referral_link", "referred",
                "tot_referrals", "next_reward", "created_at"):
        payload["subscriber"][key] = None
    assert valid(payload)["coupon_code"] is None


REQUIRED_FIELDS = [
    ("new_referral", ("campaign_id",)),
    ("new_referral", ("subscriber",)),
    ("new_referral", ("subscriber", "id")),
    ("new_referral", ("subscriber", "email")),
    ("new_referral", ("referrer",)),
    ("new_referral", ("referrer", "id")),
    ("new_referral", ("referrer", "email")),
    *[(name, path) for name in ("reward_unlocked", "reward_redeemed") for path in (
        ("campaign_id",), ("subscriber", "id"), ("subscriber", "email"), ("reward",), ("reward", "id"),
    )],
]


@pytest.mark.parametrize("name, path", REQUIRED_FIELDS)
def test_a_missing_required_field_is_named_in_the_errors(name, path):
    payload = fixture(name)
    parent = payload
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    errors = errors_of(payload)
    for key in path[:-1]:
        errors = errors[key]
    assert errors == {path[-1]: ["Missing data for required field."]}


@pytest.mark.parametrize("payload", [{}, {"type": None}, {"campaign_id": "MF6319db9890"}])
def test_missing_type_is_an_error_with_an_empty_event_type(payload):
    assert validate_event(payload) == ("", None, {"type": ["Missing data for required field."]})


@pytest.mark.parametrize("bad_type", [7, ["new_referral"], {"name": "new_referral"}, True])
def test_a_non_string_type_is_an_error(bad_type):
    event_type, data, errors = validate_event({"type": bad_type})
    assert (event_type, data) == ("", None)
    assert list(errors) == ["type"]


@pytest.mark.parametrize("path, bad_value", [
    (("subscriber", "tot_referrals"), "abc"),
    (("subscriber", "tot_referrals"), True),
    (("subscriber", "next_reward"), "2"),
    (("subscriber", "created_at"), 1564403873.5),
    (("referrals",), "4"),
    (("referrals",), False),
    (("subscriber", "email"), "not-an-email"),
    (("subscriber", "id"), 123),
    (("subscriber", "id"), "   "),
    (("campaign_id",), ["MF6319db9890"]),
    (("subscriber",), "sub_hjdgc74u"),
    (("reward",), ["reward_cdebf4f013"]),
    (("shipping_details",), "1 Example Street"),
    (("subscriber", "referred"), "perhaps"),
])
def test_wrong_types_are_rejected_without_echoing_the_value(path, bad_value):
    payload = fixture("reward_redeemed")
    parent = payload
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = bad_value
    errors = errors_of(payload)
    for key in path:
        errors = errors[key]
    if isinstance(errors, dict):  # a nested object of the wrong type
        errors = errors["_schema"]
    assert isinstance(errors, list) and errors
    assert str(bad_value) not in json.dumps(errors)


def test_errors_never_contain_the_email_value():
    payload = fixture("new_referral")
    payload["referrer"]["email"] = "john.smith@"
    errors = errors_of(payload)
    assert errors == {"referrer": {"email": ["Not a valid email address."]}}
    assert "john.smith" not in json.dumps(errors)


@pytest.mark.parametrize("event_type", WITHOUT_EXAMPLE)
def test_undocumented_events_need_only_their_type_and_keep_extras(event_type):
    payload = {"type": event_type, "partner": {"logo": "https://example.com/l.png"}, "whatever": [1, "two"]}
    data = valid(payload)
    assert data == payload
    assert valid({"type": event_type}) == {"type": event_type}


@pytest.mark.parametrize("event_type", WITHOUT_EXAMPLE)
@pytest.mark.parametrize("key", ["campaign", "subscriber", "lead", "referral"])
def test_undocumented_events_require_nested_objects_to_be_objects(event_type, key):
    errors = errors_of({"type": event_type, key: "not an object"})
    assert list(errors) == [key]


def test_partner_pending_referral_documented_start_validates_and_is_normalised():
    payload = {
        "type": "new_partner_pending_referral",
        "campaign": {"id": "partner_campaign_de9c1c7c7bbc", "referral_code": "1b5b5c4094", "type": "x"},
        "subscriber": {"email": " Jane@Example.COM ", "referral_status": "pending", "extra": 1},
    }
    data = valid(payload)
    assert data["campaign"] == payload["campaign"]
    assert data["subscriber"] == {"email": "jane@example.com", "referral_status": "pending", "extra": 1}


def test_unknown_event_type_is_unhandled_not_invalid():
    assert validate_event({"type": "partner_referral_rejected", "x": 1}) == ("partner_referral_rejected", None, None)


# --- De-duplication -----------------------------------------------------------------------


def key_of(payload: dict) -> str:
    return dedup_key(payload["type"], valid(payload))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_dedup_key_is_stable_bounded_and_free_of_personal_data(name):
    payload = fixture(name)
    key = key_of(payload)
    assert key == key_of(fixture(name))
    assert key.startswith(f"{payload['type']}:") and len(key) <= 200
    for email in ("john.doe@email.com", "john.smith@email.com", "John"):
        assert email not in key


def test_redelivery_with_reordered_unknown_extras_has_the_same_key():
    first = fixture("reward_unlocked")
    first["extra_a"], first["extra_b"] = 1, {"p": 1, "q": 2}
    second = dict(reversed(list(copy.deepcopy(first).items())))
    second["extra_b"] = {"q": 2, "p": 1}
    assert json.dumps(first) != json.dumps(second)
    assert key_of(first) == key_of(second)


def test_dedup_key_normalises_case_and_whitespace_of_emails():
    first = {"type": "new_offer_lead", "offer_id": "offer_123abc", "lead": {"email": "Lead@Example.com"}}
    second = {"type": "new_offer_lead", "offer_id": "offer_123abc", "lead": {"email": " lead@example.com "}}
    assert key_of(first) == key_of(second)
    assert "lead@example.com" not in key_of(first)


def test_a_second_unlock_of_a_recurring_reward_has_a_different_key():
    first = fixture("reward_unlocked")
    second = fixture("reward_unlocked")
    second["referrals"] = second["subscriber"]["tot_referrals"] = 8
    assert key_of(first) != key_of(second)


def test_legacy_unlock_falls_back_to_the_subscriber_total_for_the_count():
    current = fixture("reward_unlocked")
    legacy = fixture("reward_unlocked__legacy") | {"subscriber": current["subscriber"]}
    later = copy.deepcopy(legacy)
    later["subscriber"]["tot_referrals"] = 8
    assert key_of(legacy) == key_of(current)  # the same unlock, told in the older shape
    assert key_of(legacy) != key_of(later)


def test_the_legacy_example_is_an_event_of_its_own():
    legacy, current = fixture("reward_unlocked__legacy"), fixture("reward_unlocked")
    assert legacy["subscriber"]["id"] != current["subscriber"]["id"]
    assert legacy["subscriber"]["email"] != current["subscriber"]["email"]
    assert key_of(legacy) != key_of(current)


def test_new_referral_key_depends_on_both_subscriber_and_referrer():
    other_referrer = fixture("new_referral")
    other_referrer["referrer"]["id"] = "sub_other"
    assert key_of(fixture("new_referral")) != key_of(other_referrer)


def test_redemption_of_another_variant_has_a_different_key():
    other = fixture("reward_redeemed")
    other["reward_variant_sku"] = "t_shirt_s"
    assert key_of(fixture("reward_redeemed")) != key_of(other)


def test_sync_subscriber_status_change_has_a_different_key():
    pending = {"type": "sync_subscriber", "subscriber": {"id": "sub_1", "referral_status": "pending"}}
    verified = {"type": "sync_subscriber", "subscriber": {"id": "sub_1", "referral_status": "verified"}}
    assert key_of(pending) != key_of(verified)
    assert key_of(pending) == key_of({**pending, "noise": True})


def test_partner_events_are_keyed_by_campaign_and_subscriber_email():
    base = {"type": "new_partner_referral", "campaign": {"id": "partner_campaign_1"}}
    jane = {**base, "subscriber": {"email": "jane@example.com"}}
    joe = {**base, "referral": {"email": "joe@example.com"}}
    assert key_of(jane) != key_of(joe)
    assert key_of(jane) == key_of({**jane, "partner": {"logo": "x"}})


def test_undocumented_event_without_identity_falls_back_to_a_content_hash():
    first = {"type": "new_partner_referral", "b": 1, "a": {"y": 2, "x": 1}}
    reordered = {"a": {"x": 1, "y": 2}, "type": "new_partner_referral", "b": 1}
    different = {"type": "new_partner_referral", "b": 2, "a": {"y": 2, "x": 1}}
    assert key_of(first) == key_of(reordered)
    assert key_of(first) != key_of(different)


def test_raw_dedup_key_hashes_the_body():
    key = raw_dedup_key(b'{"type": "x"}')
    assert key.startswith("raw:") and len(key) == 4 + 64
    assert key == raw_dedup_key(b'{"type": "x"}') != raw_dedup_key(b'{"type":"x"}')


# --- Affected subscribers -----------------------------------------------------------------


def test_new_referral_affects_subscriber_then_referrer():
    pairs = EVENTS["new_referral"].subscribers(valid(fixture("new_referral")))
    assert [role for role, _ in pairs] == ["subscriber", "referrer"]
    subscriber, referrer = (s for _, s in pairs)
    assert subscriber == Subscriber(
        id="sub_hjdgc74u", email="john.doe@email.com", first_name="John", name="John Doe",
        referral_code="ada90f39", referral_link="https://mywebsite.com?rh_ref=ada90f39", referred=True,
        tot_referrals=0, next_reward=2, created_at=1564400550,
    )
    assert (referrer.id, referrer.email, referrer.tot_referrals) == ("sub_93ehus8h", "john.smith@email.com", 4)


@pytest.mark.parametrize("name", ["reward_unlocked", "reward_redeemed"])
def test_reward_events_affect_the_subscriber_with_a_trimmed_name(name):
    [(role, subscriber)] = EVENTS[name].subscribers(valid(fixture(name)))
    assert role == "subscriber"
    assert subscriber.name == "John Doe"


@pytest.mark.parametrize("payload, expected", [
    ({"type": "sync_subscriber", "subscriber": {"id": "sub_1", "email": "A@b.co", "referral_status": "rejected"}},
     ("subscriber", Subscriber(id="sub_1", email="a@b.co", referral_status="rejected"))),
    ({"type": "new_offer_lead", "offer_id": "offer_1", "lead": {"email": "lead@b.co", "tot_referrals": "n/a"}},
     ("lead", Subscriber(email="lead@b.co"))),
    ({"type": "new_partner_referral", "referral": {"email": "r@b.co"}, "referral_status": "confirmed"},
     ("referral", Subscriber(email="r@b.co", referral_status="confirmed"))),
    ({"type": "new_partner_pending_referral", "email": "top@b.co"},
     ("subscriber", Subscriber(email="top@b.co"))),
])
def test_undocumented_events_affect_the_first_person_found(payload, expected):
    assert EVENTS[payload["type"]].subscribers(valid(payload)) == [expected]


def test_undocumented_event_without_a_person_affects_nobody():
    assert EVENTS["sync_subscriber"].subscribers(valid({"type": "sync_subscriber", "subscriber": {}})) == []


def test_the_places_people_sit_are_gathered_from_every_spec():
    """What relay.subjects and workers.erasure read in every stored payload."""
    assert person_places() == PersonPlaces(
        keys=("subscriber", "referrer", "lead", "referral"), about=("subscriber", "lead", "referral"),
        contact_keys=("subscriber", "lead", "referral"), top_level_email=True,
    )


# --- Sprig --------------------------------------------------------------------------------


def sprig_bodies(name: str, **kwargs) -> dict[str, dict]:
    payload = fixture(name)
    data = valid(payload)
    return {
        role: sprig_user_body(sends(payload["type"], "sprig"), payload["type"], data, subscriber, role,
                              RECEIVED_AT_MS, **kwargs)
        for role, subscriber in EVENTS[payload["type"]].subscribers(data)
    }


def test_sprig_bodies_for_new_referral_subscriber_and_referrer():
    bodies = sprig_bodies("new_referral")
    assert bodies["subscriber"] == {
        "userId": "john.doe@email.com",
        "emailAddress": "john.doe@email.com",
        "attributes": {
            "sparkloop_subscriber_id": "sub_hjdgc74u",
            "sparkloop_referral_code": "ada90f39",
            "sparkloop_referral_link": "https://mywebsite.com?rh_ref=ada90f39",
            "sparkloop_total_referrals": "0",
            "sparkloop_next_reward": "2",
            "sparkloop_referred": "true",
            "sparkloop_campaign_id": "MF6319db9890",
        },
        "events": [{"event": "sparkloop_new_referral", "timestamp": RECEIVED_AT_MS}],
    }
    referrer = bodies["referrer"]
    assert referrer["userId"] == "john.smith@email.com"
    assert referrer["attributes"]["sparkloop_referred"] == "false"
    assert referrer["attributes"]["sparkloop_total_referrals"] == "4"
    assert referrer["events"] == [{"event": "sparkloop_new_referral", "timestamp": RECEIVED_AT_MS}]


def test_sprig_body_for_a_reward_carries_the_reward_and_coupon():
    attributes = sprig_bodies("reward_unlocked")["subscriber"]["attributes"]
    assert attributes["sparkloop_last_reward"] == "reward_cdebf4f013"
    assert attributes["sparkloop_last_reward_name"] == "2018 Private Report: State of the Ecommerce"
    assert attributes["sparkloop_coupon"] == "9wusha0"
    assert "sparkloop_coupon" not in sprig_bodies("reward_unlocked__legacy")["subscriber"]["attributes"]
    assert all(isinstance(value, str) for value in attributes.values())


def test_sprig_user_id_can_be_the_subscriber_id():
    body = sprig_bodies("new_referral", user_id_source="subscriber_id")["referrer"]
    assert body["userId"] == "sub_93ehus8h"
    assert body["emailAddress"] == "john.smith@email.com"


@pytest.mark.parametrize("source, subscriber, missing", [
    ("subscriber_id", Subscriber(email="a@b.co"), "id"),
    ("email", Subscriber(id="sub_1"), "email"),
])
def test_sprig_body_names_the_missing_user_id_field(source, subscriber, missing):
    with pytest.raises(ValueError, match=missing):
        sprig_user_body(SprigUser(), "sync_subscriber", {}, subscriber, "subscriber", RECEIVED_AT_MS,
                        user_id_source=source)


def test_sprig_body_for_a_sync_carries_the_status_and_omits_unknowns():
    data = valid({"type": "sync_subscriber", "subscriber": {"id": "sub_1", "email": "a@b.co",
                                                             "referral_status": "verified"}})
    [(role, subscriber)] = EVENTS["sync_subscriber"].subscribers(data)
    body = sprig_user_body(sends("sync_subscriber", "sprig"), "sync_subscriber", data, subscriber, role,
                           RECEIVED_AT_MS)
    assert body["attributes"] == {"sparkloop_subscriber_id": "sub_1", "sparkloop_referral_status": "verified"}


def test_sprig_schema_rejects_bad_bodies():
    schema = SprigUserSchema()
    assert schema.validate({"userId": "u", "attributes": {"k": "v"}, "events": [{"event": "e", "timestamp": 1}]}) == {}
    assert "userId" in schema.validate({"emailAddress": "a@b.co"})
    assert "attributes" in schema.validate({"userId": "u", "attributes": {"nested": {"a": 1}}})
    assert "attributes" in schema.validate({"userId": "u", "attributes": {f"k{i}": "v" for i in range(101)}})
    assert "events" in schema.validate({"userId": "u", "events": [{"event": "e", "timestamp": "soon"}]})


# --- Spruce -------------------------------------------------------------------------------


def test_contact_body_splits_the_name_and_carries_the_email():
    [(_, subscriber)] = EVENTS["reward_unlocked"].subscribers(valid(fixture("reward_unlocked")))
    assert contact_body(subscriber) == {
        "category": "patient", "givenName": "John", "familyName": "Doe",
        "emailAddresses": [{"value": "john.doe@email.com"}],
    }


@pytest.mark.parametrize("first_name, name, given, family", [
    (None, "Mary Ann Lee", "Mary", "Ann Lee"),
    ("Mary Ann", "Mary Ann Lee", "Mary Ann", "Lee"),
    ("John", "John", "John", None),
    (None, None, None, None),
])
def test_contact_body_name_rules(first_name, name, given, family):
    body = contact_body(Subscriber(email="a@b.co", first_name=first_name, name=name))
    assert body.get("givenName") == given
    assert body.get("familyName") == family
    assert body["emailAddresses"] == [{"value": "a@b.co"}]


def test_contact_body_refuses_a_subscriber_spruce_would_reject():
    with pytest.raises(ValueError):
        contact_body(Subscriber(id="sub_1"))


def test_search_and_conversation_bodies():
    assert search_by_email_body(" Jane@Example.com") == {
        "structured": {"emailAddressFilter": [{"match": "any", "values": ["jane@example.com"]}]}
    }
    assert note_conversation_body("entity_1", ["entity_m"]) == {
        "type": "note",
        "note": {"title": "SparkLoop referrals", "associatedContactIds": ["entity_1"], "memberIds": ["entity_m"]},
    }
    assert "memberIds" not in note_conversation_body("entity_1", [], title="T")["note"]


def note_text(event_type: str, payload: dict) -> str:
    note = sends(event_type, "spruce")
    assert isinstance(note, SpruceNote)
    return note.text(valid(payload))


def test_note_for_reward_unlocked():
    body = note_message_body(note_text("reward_unlocked", fixture("reward_unlocked")))
    assert body == {"body": [{"type": "text", "value": (
        "SparkLoop: reward unlocked — 2018 Private Report: State of the Ecommerce (after 4 referrals). "
        "Coupon: 9wusha0."
    )}], "internal": True}


def test_note_for_reward_redeemed_lists_variant_and_every_shipping_line():
    payload = fixture("reward_redeemed")
    payload["shipping_details"]["delivery_notes"] = "Leave at door"
    text = note_message_body(note_text("reward_redeemed", payload))["body"][0]["value"]
    lines = text.splitlines()
    assert lines[0].startswith("SparkLoop: reward redeemed — 2018 Private Report")
    assert "Variant: T-Shirt XXL (t_shirt_xxl)." in lines
    for line in ("Name: John Doe", "Address line 1: 1 Example Street", "Address line 2: Apt 2",
                 "City: Springfield", "State: IL", "Zip: 62701", "Country: US", "Delivery notes: Leave at door"):
        assert line in lines
    assert "{" not in text and "shipping_" not in text
