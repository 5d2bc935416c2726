"""Sprig's settings (SPRIG_*), one declaration group, declared by Sprig's destination
(workers.sprig)."""

from __future__ import annotations

from dataclasses import dataclass

from relay.core_settings import own_reserves, reserve_overrides
from relay.settings import CallRate, Choice, CommaList, Parsed, Rate, Reading, Setting, SettingsGroup, Text, Url
from workers.sprig.sends import ATTRIBUTES, DEFAULT_ATTRIBUTE_PREFIX, USER_ID_SOURCES

# SPRIG_ATTRIBUTE_PREFIX: a namespace for Relay's attributes among the product's own.
PREFIX_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
MAX_PREFIX_LENGTH = 64


@dataclass(frozen=True)
class SprigSettings:
    api_key: str | None
    api_url: str
    user_id_source: str
    # None: every attribute (workers.sprig.sends.ATTRIBUTES).
    attributes: frozenset[str] | None
    attribute_prefix: str
    rate_limit: CallRate
    reserves: dict[str, float]  # its own reserves, those set, by lane (relay.core_settings.reserve_overrides)


def _known_attribute(position: int, name: str) -> None:
    if name not in ATTRIBUTES:
        raise ValueError(f"has an unknown attribute {name!r}; choose from {', '.join(ATTRIBUTES)}")


class AttributePrefix(Parsed):
    def parse(self, text: str) -> str:
        if len(text) > MAX_PREFIX_LENGTH or not set(text) <= PREFIX_CHARACTERS:
            raise ValueError(f"must be 1 to {MAX_PREFIX_LENGTH} letters, digits, _, . or - (got {text!r})")
        return text


def _build(reading: Reading) -> SprigSettings:
    values = dict(reading.values)
    values["attributes"] = frozenset(values["attributes"]) or None
    values["reserves"] = own_reserves(values)
    return SprigSettings(**values)


SETTINGS = SettingsGroup(
    name="sprig",
    title="Sprig",
    configured=lambda sprig: sprig.api_key is not None,
    build=_build,
    settings=(
        Setting(
            "SPRIG_API_KEY",
            "api_key",
            Text(),
            secret=True,
            doc="Sprig API key; unset = no Sprig deliveries",
        ),
        Setting("SPRIG_API_URL", "api_url", Url(), default="https://api.sprig.com", doc="Sprig API base URL"),
        Setting(
            "SPRIG_USER_ID_SOURCE",
            "user_id_source",
            Choice(USER_ID_SOURCES),
            default=USER_ID_SOURCES[0],
            doc="`email` or `subscriber_id`: what becomes Sprig's `userId`",
        ),
        Setting(
            "SPRIG_ATTRIBUTES",
            "attributes",
            CommaList(_known_attribute),
            shown_default="all",
            doc="comma-separated attributes Sprig receives, named without the prefix: "
            + ", ".join(f"`{name}`" for name in ATTRIBUTES),
        ),
        Setting(
            "SPRIG_ATTRIBUTE_PREFIX",
            "attribute_prefix",
            AttributePrefix(),
            default=DEFAULT_ATTRIBUTE_PREFIX,
            doc=f"what every Sprig attribute's name starts with (1 to {MAX_PREFIX_LENGTH} letters, digits, `_`, "
            "`.`, `-`); the Sprig event keeps its `sparkloop_<type>` name",
        ),
        Setting(
            "SPRIG_RATE_LIMIT",
            "rate_limit",
            Rate(),
            # Sprig publishes 1000 per 5 minutes per key.
            default="1000/300s",
            doc="Sprig calls per period, per API key, shared by every worker",
        ),
        # Sprig states no window: its reserves keep a share of SPRIG_RATE_LIMIT's, which is live's
        # own limit (workers.reserves), so only the lanes below live have one.
        *reserve_overrides("sprig", "Sprig", ("catch_up", "retry")),
    ),
)


def sprig_settings(config) -> SprigSettings:
    """What this process's configuration read for Sprig."""
    return config.of(SETTINGS)
