"""What staff and researchers see: the Spruce note template and the Sprig attribute allow-list
and prefix. Unset, both are what Relay sent before they existed, byte for byte."""
from __future__ import annotations

import pytest

from relay.config import ConfigError, load_config
from schemas.events import EVENTS, sends, validate_event
from schemas.note_template import PLACEHOLDERS, NoteTemplate, TemplateError, note_text
from schemas.sprig import ATTRIBUTES, sprig_user_body
from schemas.spruce import SpruceNote
from testbed.apps import post_event, run_pending, sandbox_state
from testbed.examples import FIXTURE_NAMES, load_fixture

# Computed from the code before templates existed (commit d04d7fc): the defaults must not move.
NOTES_BEFORE_TEMPLATES = {
    "reward_redeemed": (
        "SparkLoop: reward redeemed — 2018 Private Report: State of the Ecommerce (after 4 referrals)."
        " Coupon: 9wusha0.\nVariant: T-Shirt XXL (t_shirt_xxl).\n\nShipping details:\nName: John Doe\n"
        "Address line 1: 1 Example Street\nAddress line 2: Apt 2\nCity: Springfield\nState: IL\nZip: 62701\n"
        "Country: US"),
    "reward_unlocked": "SparkLoop: reward unlocked — 2018 Private Report: State of the Ecommerce (after 4 "
                       "referrals). Coupon: 9wusha0.",
    "reward_unlocked__legacy": "SparkLoop: reward unlocked — 2018 Private Report: State of the Ecommerce "
                               "(after 4 referrals).",
}
_REWARD_SUBSCRIBER = {
    "sparkloop_subscriber_id": "sub_hjdgc74u", "sparkloop_referral_code": "f9464199",
    "sparkloop_referral_link": "https://mywebsite.com?rh_ref=f9464199", "sparkloop_total_referrals": "4",
    "sparkloop_next_reward": "2", "sparkloop_referred": "true", "sparkloop_campaign_id": "MF6319db9890",
    "sparkloop_last_reward": "reward_cdebf4f013",
    "sparkloop_last_reward_name": "2018 Private Report: State of the Ecommerce",
}
ATTRIBUTES_BEFORE_TEMPLATES = {
    "new_referral": {
        "subscriber": {
            "sparkloop_subscriber_id": "sub_hjdgc74u", "sparkloop_referral_code": "ada90f39",
            "sparkloop_referral_link": "https://mywebsite.com?rh_ref=ada90f39", "sparkloop_total_referrals": "0",
            "sparkloop_next_reward": "2", "sparkloop_referred": "true", "sparkloop_campaign_id": "MF6319db9890"},
        "referrer": {
            "sparkloop_subscriber_id": "sub_93ehus8h", "sparkloop_referral_code": "f9464199",
            "sparkloop_referral_link": "https://mywebsite.com?rh_ref=f9464199", "sparkloop_total_referrals": "4",
            "sparkloop_next_reward": "1", "sparkloop_referred": "false", "sparkloop_campaign_id": "MF6319db9890"},
    },
    "reward_redeemed": {"subscriber": _REWARD_SUBSCRIBER | {"sparkloop_coupon": "9wusha0"}},
    "reward_unlocked": {"subscriber": _REWARD_SUBSCRIBER | {"sparkloop_coupon": "9wusha0"}},
    "reward_unlocked__legacy": {"subscriber": _REWARD_SUBSCRIBER | {
        "sparkloop_subscriber_id": "sub_r7k2m9qe", "sparkloop_referral_code": "c41e7a2b",
        "sparkloop_referral_link": "https://mywebsite.com?rh_ref=c41e7a2b"}},
    # The fixtures built from SparkLoop's documented fields (issue 16), computed from the code
    # then: these types' attributes had not been pinned before.
    "new_partner_pending_referral": {"subscriber": {
        "sparkloop_campaign_id": "partner_campaign_de9c1c7c7bbc", "sparkloop_referral_status": "pending"}},
    "new_partner_referral": {"subscriber": {
        "sparkloop_campaign_id": "partner_campaign_de9c1c7c7bbc", "sparkloop_referral_status": "verified"}},
    "new_offer_lead": {"lead": {"sparkloop_referral_status": "confirmed"}},
    "sync_subscriber": {"subscriber": {
        "sparkloop_subscriber_id": "sub_p4x8n2wd", "sparkloop_referral_code": "7d3f0b96",
        "sparkloop_referral_link": "https://mywebsite.com?rh_ref=7d3f0b96", "sparkloop_total_referrals": "0",
        "sparkloop_next_reward": "2", "sparkloop_referred": "true", "sparkloop_referral_status": "verified"}},
}
# The README's example, and the note staff see for the documented reward_redeemed example.
EXAMPLE_TEMPLATE = ("{event} for {subscriber_name}: {reward}\nReferrals: {referrals}\nCoupon: {coupon}\n"
                    "Variant: {variant}\n\nShip to:\n{shipping}")
EXAMPLE_NOTE = ("reward redeemed for John Doe: 2018 Private Report: State of the Ecommerce\nReferrals: 4\n"
                "Coupon: 9wusha0\nVariant: T-Shirt XXL (t_shirt_xxl)\n\nShip to:\nName: John Doe\n"
                "Address line 1: 1 Example Street\nAddress line 2: Apt 2\nCity: Springfield\nState: IL\n"
                "Zip: 62701\nCountry: US")


def config(tmp_path, **env):
    return load_config(env, instance_path=tmp_path)


def valid(name: str) -> tuple[str, dict]:
    event_type, data, errors = validate_event(load_fixture(name))
    assert errors is None
    return event_type, data


def note_for(name: str, template: NoteTemplate | None) -> str | None:
    event_type, data = valid(name)
    spruce = EVENTS[event_type].sends.get("spruce")
    return note_text(spruce.text, event_type, data, template) if isinstance(spruce, SpruceNote) else None


def attributes_for(name: str, settings) -> dict:
    event_type, data = valid(name)
    return {role: sprig_user_body(sends(event_type, "sprig"), event_type, data, subscriber, role, 0,
                                  attributes=settings.sprig_attributes,
                                  attribute_prefix=settings.sprig_attribute_prefix)["attributes"]
            for role, subscriber in EVENTS[event_type].subscribers(data)}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_unset_the_note_and_the_attributes_are_what_they_were(name, tmp_path):
    defaults = config(tmp_path)
    assert defaults.spruce_note_template is None
    assert note_for(name, defaults.spruce_note_template) == NOTES_BEFORE_TEMPLATES.get(name)
    assert attributes_for(name, defaults) == ATTRIBUTES_BEFORE_TEMPLATES[name]


def test_the_readme_example_is_the_note_staff_see(tmp_path):
    template = config(tmp_path, RELAY_SPRUCE_NOTE_TEMPLATE=EXAMPLE_TEMPLATE).spruce_note_template
    assert note_for("reward_redeemed", template) == EXAMPLE_NOTE


def test_absent_values_are_empty_and_default_is_the_whole_old_note():
    template = NoteTemplate.parse("{{SparkLoop}} [{coupon}] [{variant}] [{shipping}]\n{default}")
    assert note_for("reward_unlocked__legacy", template) == (
        "{SparkLoop} [] [] []\n" + NOTES_BEFORE_TEMPLATES["reward_unlocked__legacy"])
    assert note_for("reward_unlocked", NoteTemplate.parse("{summary}")) == NOTES_BEFORE_TEMPLATES["reward_unlocked"]


def test_every_placeholder_renders_for_every_note_event():
    everything = NoteTemplate.parse(" ".join(f"{{{name}}}" for name in PLACEHOLDERS))
    for name in NOTES_BEFORE_TEMPLATES:
        assert "{" not in note_for(name, everything)


@pytest.mark.parametrize("template, named", [
    ("Hello {name}", "{name}"),
    ("{reward.__class__}", "{reward.__class__}"),
    ("{reward[0]}", "{reward[0]}"),
    ("{reward!r}", "{reward!r}"),
    ("{reward:>40}", "{reward:>40}"),
    ("{}", "{}"),
    ("{0}", "{0}"),
])
def test_a_bad_placeholder_stops_the_start_naming_it(template, named, tmp_path):
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, RELAY_SPRUCE_NOTE_TEMPLATE=template)
    message = str(raised.value)
    assert message.startswith("RELAY_SPRUCE_NOTE_TEMPLATE ") and named in message and "\n" not in message


@pytest.mark.parametrize("template", ["Coupon: {coupon", "a } b"])
def test_unbalanced_braces_are_refused(template):
    with pytest.raises(TemplateError, match="write {{ and }} for literal braces"):
        NoteTemplate.parse(template)


def test_a_template_file_is_read_relative_to_the_instance_folder(tmp_path):
    (tmp_path / "note.txt").write_text(EXAMPLE_TEMPLATE + "\n", encoding="utf-8")
    template = config(tmp_path, RELAY_SPRUCE_NOTE_TEMPLATE_FILE="note.txt").spruce_note_template
    assert note_for("reward_redeemed", template) == EXAMPLE_NOTE  # its last line break is dropped
    absolute = config(tmp_path / "elsewhere", RELAY_SPRUCE_NOTE_TEMPLATE_FILE=str(tmp_path / "note.txt"))
    assert absolute.spruce_note_template == template


def test_template_file_problems_name_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"^RELAY_SPRUCE_NOTE_TEMPLATE_FILE: cannot read .*missing.txt"):
        config(tmp_path, RELAY_SPRUCE_NOTE_TEMPLATE_FILE="missing.txt")
    (tmp_path / "bad.txt").write_text("{nope}\n")
    with pytest.raises(ConfigError, match=r"^RELAY_SPRUCE_NOTE_TEMPLATE_FILE has an unknown placeholder \{nope\}"):
        config(tmp_path, RELAY_SPRUCE_NOTE_TEMPLATE_FILE="bad.txt")
    with pytest.raises(ConfigError, match="both set"):
        config(tmp_path, RELAY_SPRUCE_NOTE_TEMPLATE="{reward}", RELAY_SPRUCE_NOTE_TEMPLATE_FILE="bad.txt")


def test_the_allow_list_can_name_every_attribute_relay_sets(tmp_path):
    produced = {key.removeprefix("sparkloop_") for name in FIXTURE_NAMES
                for attributes in attributes_for(name, config(tmp_path)).values() for key in attributes}
    assert produced <= set(ATTRIBUTES)


def test_allow_list_and_prefix_choose_what_sprig_gets(tmp_path):
    settings = config(tmp_path, SPRIG_ATTRIBUTES=" coupon, total_referrals ,", SPRIG_ATTRIBUTE_PREFIX="referrals.")
    assert attributes_for("reward_unlocked", settings) == {
        "subscriber": {"referrals.total_referrals": "4", "referrals.coupon": "9wusha0"}}


@pytest.mark.parametrize("env, message", [
    ({"SPRIG_ATTRIBUTES": "coupon,email"}, "SPRIG_ATTRIBUTES has an unknown attribute 'email'"),
    ({"SPRIG_ATTRIBUTE_PREFIX": "spark loop"}, "SPRIG_ATTRIBUTE_PREFIX must be"),
    ({"SPRIG_ATTRIBUTE_PREFIX": "x" * 65}, "SPRIG_ATTRIBUTE_PREFIX must be"),
])
def test_bad_attribute_settings_name_the_variable(env, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, **env)


def test_staff_read_the_templated_note_and_sprig_gets_the_chosen_attributes(relay_app, sandbox):
    app = relay_app(RELAY_SPRUCE_NOTE_TEMPLATE=EXAMPLE_TEMPLATE, SPRIG_ATTRIBUTES="coupon,last_reward",
                    SPRIG_ATTRIBUTE_PREFIX="relay_")
    assert post_event(app.test_client(), load_fixture("reward_redeemed")).status_code == 200
    run_pending(app)

    state = sandbox_state(sandbox)
    [conversation] = state["spruce"]["conversations"]
    [note] = state["spruce"]["items"][conversation["id"]]
    assert note["isInternalNote"] is True
    # PostgreSQL's JSONB keeps no key order, so the shipping lines may come in another order.
    assert sorted(note["text"].splitlines()) == sorted(EXAMPLE_NOTE.splitlines())
    assert note["text"].startswith(EXAMPLE_NOTE.split("Name:")[0])
    user = state["sprig"]["users"]["john.doe@email.com"]
    assert user["attributes"] == {"relay_coupon": "9wusha0", "relay_last_reward": "reward_cdebf4f013"}
    assert [e["event"] for e in user["events"]] == ["sparkloop_reward_redeemed"]


def test_a_bad_template_stops_the_web_app_at_start(tmp_path):
    from web import create_app

    with pytest.raises(ConfigError, match=r"^RELAY_SPRUCE_NOTE_TEMPLATE has an unknown placeholder \{oops\}"):
        create_app({"SPARKLOOP_WEBHOOK_TOKEN": "t", "RELAY_INSTANCE_PATH": str(tmp_path),
                    "RELAY_SPRUCE_NOTE_TEMPLATE": "Reward {reward}, {oops}"})
