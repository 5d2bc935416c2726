"""Sprig as a destination: one `POST /v2/users` per subscriber the event is about.

This module is the declaration the intake loads too (relay.destinations): it imports only
schemas/ and relay/; the client, the delivery and the doctor's probe are imported on first call.
"""

from __future__ import annotations

from typing import Any

from relay.destinations import Destination, SandboxMount, Variable
from schemas.sprig import SprigUser, reward_attributes

USER, REWARD_USER = SprigUser(), SprigUser(reward_attributes)


def client(config) -> Any:
    from workers.sprig.client import sprig_client

    return sprig_client(config)


def deliver(ctx, sends: SprigUser) -> str | None:
    from workers.sprig.delivery import upsert_subscribers

    return upsert_subscribers(ctx, sends)


def probe(config, timeout_s: float) -> list:
    from workers.sprig.doctor import probe

    return probe(config, timeout_s)


DESTINATION = Destination(
    name="sprig",
    variables=(
        Variable("SPRIG_API_KEY", "Sprig API key; unset = no Sprig deliveries.", secret=True),
        Variable("SPRIG_API_URL", "Sprig API base URL.", "https://api.sprig.com"),
        Variable("SPRIG_USER_ID_SOURCE", "What becomes Sprig's userId: email or subscriber_id.", "email"),
        Variable("SPRIG_ATTRIBUTES", "Comma-separated Sprig attributes to send, named without the prefix."),
        Variable("SPRIG_ATTRIBUTE_PREFIX", "What every Sprig attribute's name starts with.", "sparkloop_"),
        Variable("SPRIG_RATE_LIMIT", "Sprig calls per period, per API key, shared by every worker.", "1000/300s"),
    ),
    receives={
        "new_referral": USER,
        "new_partner_pending_referral": USER,
        "new_partner_referral": USER,
        "new_offer_lead": USER,
        "reward_unlocked": REWARD_USER,
        "reward_redeemed": REWARD_USER,
        "sync_subscriber": USER,
    },
    default_sends=USER,
    client=client,
    deliver=deliver,
    most_calls=lambda sends, subscribers: max(subscribers, 1),
    probe=probe,
    checks=("Sprig key",),
    sandbox=SandboxMount("SPRIG_API_URL", "/sprig", "sandbox-sprig-key"),
)
