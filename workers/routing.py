"""Which vendors hear about which SparkLoop event: the one table to edit for a new event.

Each entry maps a destination to the handler that performs its delivery. RELAY_ROUTES can
override the destinations per event type; a destination without credentials is skipped.
"""
from __future__ import annotations

from collections.abc import Callable

from web.config import Config
from workers import sprig_delivery, spruce_delivery
from workers.context import DeliveryContext

Handler = Callable[[DeliveryContext], object]

ROUTES: dict[str, dict[str, Handler]] = {
    "new_referral": {
        "sprig": sprig_delivery.upsert_subscribers,
        "spruce": spruce_delivery.ensure_contact,
    },
    "new_partner_pending_referral": {"sprig": sprig_delivery.upsert_subscribers},
    "new_partner_referral": {
        "sprig": sprig_delivery.upsert_subscribers,
        "spruce": spruce_delivery.ensure_contact,
    },
    "new_offer_lead": {"sprig": sprig_delivery.upsert_subscribers},
    "reward_unlocked": {
        "sprig": sprig_delivery.upsert_subscribers,
        "spruce": spruce_delivery.post_reward_note,
    },
    "reward_redeemed": {
        "sprig": sprig_delivery.upsert_subscribers,
        "spruce": spruce_delivery.post_reward_note,
    },
    "sync_subscriber": {"sprig": sprig_delivery.upsert_subscribers},
}

# Used when RELAY_ROUTES adds a destination that the table has no entry for.
DEFAULT_HANDLERS: dict[str, Handler] = {
    "sprig": sprig_delivery.upsert_subscribers,
    "spruce": spruce_delivery.ensure_contact,
}


def planned_destinations(event_type: str, config: Config) -> tuple[str, ...]:
    if event_type in config.routes_override:
        wanted = config.routes_override[event_type]
    else:
        wanted = tuple(ROUTES.get(event_type, {}))
    return tuple(d for d in wanted if d in config.configured_destinations)


def handler_for(event_type: str, destination: str) -> Handler:
    return ROUTES.get(event_type, {}).get(destination) or DEFAULT_HANDLERS[destination]
