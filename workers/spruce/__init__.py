"""Spruce as a destination: the subscriber's contact, and for notes the note conversation and
one internal note.

This module is the declaration the intake loads too (relay.destinations): it imports only
schemas/, relay/ and its settings; the client, the delivery and the doctor's probe are imported
on first call.
"""

from __future__ import annotations

from typing import Any

from relay.destinations import Destination, SandboxMount
from workers.spruce.sends import SpruceContact, SpruceNote, reward_redeemed_note, reward_unlocked_note
from workers.spruce.settings import SETTINGS

# The time of a note's first attempt (Progress.times), which a forced replay keeps.
NOTE_FIRST_ATTEMPT = "spruce.note.first_attempt"
# Whom the sandbox's notes are shared with (sandbox.spruce.MEMBERS: its "Referrals Team").
SANDBOX_NOTE_MEMBERS = "entity_0SANDB0XTEAM04"
CONTACT = SpruceContact()
NAME = "spruce"
# What its deliveries remember of a subscriber (workers.identity), so a known one costs no search.
CONTACT_ID, NOTE_CONVERSATION_ID = "contact_id", "note_conversation_id"


def client(runtime) -> Any:
    from workers.spruce.client import spruce_client

    return spruce_client(runtime)


def deliver(ctx, sends: SpruceContact | SpruceNote) -> str | None:
    from workers.spruce.delivery import deliver

    deliver(ctx, sends)
    return None


def probe(config, timeout_s: float) -> list:
    from workers.spruce.doctor import probe

    return probe(config, timeout_s)


DESTINATION = Destination(
    name=NAME,
    settings=SETTINGS,
    receives={
        "new_referral": CONTACT,
        "new_partner_referral": CONTACT,
        "reward_unlocked": SpruceNote(reward_unlocked_note),
        "reward_redeemed": SpruceNote(reward_redeemed_note),
    },
    default_sends=CONTACT,
    client=client,
    deliver=deliver,
    # Search and create the contact; for a note also list and create the note conversation,
    # and post the note.
    most_calls=lambda sends, subscribers: 5 if isinstance(sends, SpruceNote) else 2,
    probe=probe,
    checks=("Spruce token", "Spruce note members"),
    remembers={CONTACT_ID: "Spruce contact id", NOTE_CONVERSATION_ID: "Spruce note conversation id"},
    unerased="the contact stays: it is the practice's clinical record, which Relay does not delete (ask "
    "the practice if it must go)",
    unlinked="looks the contact up by email (and creates it only if none is found), then its note "
    "conversation among the contact's",
    sandbox=SandboxMount(
        "SPRUCE_API_TOKEN",
        "sandbox-spruce-token",
        "SPRUCE_API_URL",
        "/spruce/v1",
        settings={"SPRUCE_NOTE_MEMBER_IDS": SANDBOX_NOTE_MEMBERS},
        records={CONTACT_ID: "contacts", NOTE_CONVERSATION_ID: "conversations"},
    ),
    # Without it, a note older than Spruce's key window would be posted again instead of being
    # looked for first.
    kept_on_force=(NOTE_FIRST_ATTEMPT,),
)
