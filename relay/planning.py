"""What a payload is and where it goes: the intake plans every event it receives with this,
and a replay plans an invalid or unhandled event again with it (operations.replay)."""

from __future__ import annotations

from dataclasses import dataclass

from relay.config import Config
from relay.models import EventStatus
from schemas.events import dedup_key, validate_event


@dataclass(frozen=True)
class Plan:
    """What a payload is: its type, status, field errors, natural de-duplication key (None when
    invalid or unhandled) and the destinations it goes to."""

    event_type: str
    status: str
    errors: dict | None = None
    key: str | None = None
    destinations: tuple[str, ...] = ()


def planned_destinations(event_type: str, config: Config) -> tuple[str, ...]:
    """The destinations that receive the event (RELAY_ROUTES overrides what they declare) and
    have credentials."""
    wanted = config.routes_override.get(event_type, config.destinations.receiving(event_type))
    return tuple(d for d in wanted if d in config.configured_destinations)


def plan_event(payload: dict, config: Config) -> Plan:
    """Validate and route a payload: used on receipt and again when an event is replayed."""
    event_type, data, errors = validate_event(payload)
    if errors is not None:
        return Plan(event_type, EventStatus.INVALID, errors=errors)
    if data is None:
        return Plan(event_type, EventStatus.UNHANDLED)
    destinations = planned_destinations(event_type, config)
    return Plan(
        event_type,
        EventStatus.RECEIVED if destinations else EventStatus.DONE,
        key=dedup_key(event_type, data),
        destinations=destinations,
    )
