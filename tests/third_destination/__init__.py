"""A third destination, Ledger, declared in this one folder: an HTTP endpoint this folder serves
on loopback (endpoint.py) that keeps a record per subscriber an event names. Nothing outside this
folder names it: RELAY_PLUGINS=tests.third_destination adds it to a Relay, as an installed
vendor's package is added by its entry point (relay.destinations).

Like Sprig's and Spruce's, this declaration is light: its client, delivery and probe are imported
when first called."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from relay.config import CallRate, ConfigError
from relay.destinations import Destination, Variable
from relay.durations import parse_duration

NAME = "ledger"


@dataclass(frozen=True)
class Record:
    """What Ledger receives for an event type: a record of this kind per subscriber."""

    kind: str


@dataclass(frozen=True)
class LedgerSettings:
    url: str
    token: str
    rate: CallRate


def settings(env: Mapping[str, str]) -> LedgerSettings:
    url = (env.get("LEDGER_URL") or "").strip()
    if not url.startswith(("http://", "https://")):
        raise ConfigError("LEDGER_URL must be an http:// or https:// URL when LEDGER_TOKEN is set")
    raw = (env.get("LEDGER_RATE_LIMIT") or "").strip() or "100/1s"
    count, _, period = raw.partition("/")
    try:
        rate = CallRate(int(count), parse_duration(period))
    except ValueError:
        raise ConfigError(f"LEDGER_RATE_LIMIT must look like 100/1s: calls per period (got {raw!r})") from None
    return LedgerSettings(url.rstrip("/"), env["LEDGER_TOKEN"].strip(), rate)


def client(config):
    from tests.third_destination.client import ledger_client

    return ledger_client(config)


def deliver(ctx, sends: Record) -> str | None:
    from tests.third_destination.delivery import deliver

    return deliver(ctx, sends)


def probe(config, timeout_s: float) -> list:
    from tests.third_destination.doctor import probe

    return probe(config, timeout_s)


DESTINATION = Destination(
    name=NAME,
    variables=(
        Variable("LEDGER_TOKEN", "Ledger's API token; unset = no Ledger deliveries.", secret=True),
        Variable("LEDGER_URL", "Ledger's base URL."),
        Variable("LEDGER_RATE_LIMIT", "Ledger calls per period, shared by every worker.", "100/1s"),
    ),
    receives={"new_referral": Record("referral"), "reward_unlocked": Record("reward")},
    default_sends=Record("event"),
    client=client,
    deliver=deliver,
    most_calls=lambda sends, subscribers: max(subscribers, 1),
    probe=probe,
    checks=("Ledger token",),
    settings=settings,
)
