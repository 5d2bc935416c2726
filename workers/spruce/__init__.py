"""Spruce as a destination: the subscriber's contact, and for notes the note conversation and
one internal note.

This module is the declaration the intake loads too (relay.destinations): it imports only
schemas/ and relay/; the client, the delivery and the doctor's probe are imported on first call.
"""

from __future__ import annotations

from typing import Any

from relay.destinations import Destination, SandboxMount, Variable
from schemas.spruce import SpruceContact, SpruceNote, reward_redeemed_note, reward_unlocked_note

# The time of a note's first attempt (Progress.times), which a forced replay keeps.
NOTE_FIRST_ATTEMPT = "spruce.note.first_attempt"
# Whom the sandbox's notes are shared with (sandbox.spruce.MEMBERS: its "Referrals Team").
SANDBOX_NOTE_MEMBERS = "entity_0SANDB0XTEAM04"
CONTACT = SpruceContact()


def client(config) -> Any:
    from workers.spruce.client import spruce_client

    return spruce_client(config)


def deliver(ctx, sends: SpruceContact | SpruceNote) -> str | None:
    from workers.spruce.delivery import deliver

    deliver(ctx, sends)
    return None


def probe(config, timeout_s: float) -> list:
    from workers.spruce.doctor import probe

    return probe(config, timeout_s)


DESTINATION = Destination(
    name="spruce",
    variables=(
        Variable(
            "SPRUCE_API_TOKEN",
            "Spruce bearer token (base64 of access_id:secret_key); unset = no Spruce deliveries.",
            secret=True,
        ),
        Variable("SPRUCE_API_URL", "Spruce API base URL.", "https://api.sprucehealth.com/v1"),
        Variable("SPRUCE_NOTE_MEMBER_IDS", "Comma-separated Spruce member ids added to note conversations."),
        Variable("RELAY_SPRUCE_NOTE_TEMPLATE", "The internal note staff read on Spruce, with {placeholder}s."),
        Variable("RELAY_SPRUCE_NOTE_TEMPLATE_FILE", "The same from a UTF-8 file (relative to RELAY_INSTANCE_PATH)."),
        Variable("SPRUCE_RATE_LIMIT", "Spruce calls per period, per organization token.", "50/60s"),
    ),
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
    sandbox=SandboxMount(
        "SPRUCE_API_URL",
        "/spruce/v1",
        "sandbox-spruce-token",
        settings={"SPRUCE_NOTE_MEMBER_IDS": SANDBOX_NOTE_MEMBERS},
    ),
    # Without it, a note older than Spruce's key window would be posted again instead of being
    # looked for first.
    kept_on_force=(NOTE_FIRST_ATTEMPT,),
)
