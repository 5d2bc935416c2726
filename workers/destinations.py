"""The destinations Relay delivers to, by name: each vendor's package declares its own."""

from __future__ import annotations

from typing import Any

from relay.config import Config
from workers import sprig, spruce
from workers.context import Destination

DESTINATIONS: dict[str, Destination[Any, Any]] = {d.name: d for d in (sprig.DESTINATION, spruce.DESTINATION)}


def configured(config: Config) -> dict[str, Destination[Any, Any]]:
    """The destinations that have credentials, by name."""
    return {name: DESTINATIONS[name] for name in sorted(config.configured_destinations)}
