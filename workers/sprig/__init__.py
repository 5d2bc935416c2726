"""Sprig as a destination: one `POST /v2/users` per subscriber the event is about.

This module is the declaration the intake loads too (relay.destinations): it imports only
schemas/, relay/ and its settings; the client, the delivery and the doctor's probe are imported
on first call.
"""

from __future__ import annotations

from typing import Any

from relay.destinations import Destination, Erasure, SandboxMount
from workers.sprig.sends import SprigUser, reward_attributes
from workers.sprig.settings import SETTINGS

USER, REWARD_USER = SprigUser(), SprigUser(reward_attributes)
NAME = "sprig"
# What its deliveries remember of a subscriber (workers.identity): attribute -> [received_at_ms,
# event_id] of the event whose value Sprig holds, so an older event delivered late (or
# replayed) never overwrites a newer value.
ATTRIBUTE_VERSIONS = "attribute_versions"


def client(runtime) -> Any:
    from workers.sprig.client import sprig_client

    return sprig_client(runtime)


def deliver(ctx, sends: SprigUser) -> str | None:
    from workers.sprig.delivery import upsert_subscribers

    return upsert_subscribers(ctx, sends)


def probe(config, timeout_s: float) -> list:
    from workers.sprig.doctor import probe

    return probe(config, timeout_s)


def asked(person, config) -> dict[str, int]:
    from workers.sprig.erasure import asked

    return asked(person, config)


def purge(person, runtime) -> list[str]:
    from workers.sprig.erasure import purge

    return purge(person, runtime)


DESTINATION = Destination(
    name=NAME,
    settings=SETTINGS,
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
    remembers={ATTRIBUTE_VERSIONS: "Sprig attribute versions"},
    unlinked="sends every attribute its event carries, even one a newer event set (for a Sprig user "
    "that lost its attributes)",
    sandbox=SandboxMount("SPRIG_API_KEY", "sandbox-sprig-key", "SPRIG_API_URL", "/sprig"),
    erasure=Erasure(asked, purge, then="Sprig deletes the visitor after its delay, 10 days by default"),
)
