"""A third destination, Ledger, declared in this one folder: an HTTP endpoint this folder serves
on loopback (endpoint.py) that keeps a record per subscriber an event names. Nothing outside this
folder names it but the test that shows it at work (tests/test_third_destination.py):
RELAY_PLUGINS=testbed.third_destination adds it to a Relay, as an installed vendor's package is
added by its entry point (relay.destinations).

Like Sprig's and Spruce's, this declaration is light: its client, delivery and probe are imported
when first called."""

from __future__ import annotations

from dataclasses import dataclass

from relay.destinations import Destination, Erasure
from relay.settings import CallRate, Rate, Setting, SettingsGroup, Text, Url

NAME = "ledger"
# What its deliveries remember of a subscriber (workers.identity): their account at Ledger.
ACCOUNT_ID = "account_id"


@dataclass(frozen=True)
class Record:
    """What Ledger receives for an event type: a record of this kind per subscriber."""

    kind: str


@dataclass(frozen=True)
class LedgerSettings:
    url: str
    token: str | None
    rate: CallRate


SETTINGS = SettingsGroup(
    name=NAME,
    title="Ledger",
    configured=lambda ledger: ledger.token is not None,
    build=lambda reading: LedgerSettings(**reading.values),
    settings=(
        Setting("LEDGER_TOKEN", "token", Text(), secret=True, doc="Ledger's API token; unset = no Ledger deliveries"),
        Setting("LEDGER_URL", "url", Url(), default="http://127.0.0.1:9", doc="Ledger's base URL"),
        Setting("LEDGER_RATE_LIMIT", "rate", Rate(), default="100/1s", doc="Ledger calls per period"),
    ),
)


def client(runtime):
    from testbed.third_destination.client import ledger_client

    return ledger_client(runtime)


def deliver(ctx, sends: Record) -> str | None:
    from testbed.third_destination.delivery import deliver

    return deliver(ctx, sends)


def probe(config, timeout_s: float) -> list:
    from testbed.third_destination.doctor import probe

    return probe(config, timeout_s)


def asked(person, config) -> dict[str, int]:
    return {"email": len(person.emails)}


def erase(person, runtime) -> list[str]:
    from testbed.third_destination.client import ledger_client

    return [ledger_client(runtime).erase(sorted(person.emails))] if person.emails else []


DESTINATION = Destination(
    name=NAME,
    settings=SETTINGS,
    receives={"new_referral": Record("referral"), "reward_unlocked": Record("reward")},
    default_sends=Record("event"),
    client=client,
    deliver=deliver,
    most_calls=lambda sends, subscribers: max(subscribers, 1),
    probe=probe,
    checks=("Ledger token",),
    erasure=Erasure(asked, erase),
    remembers={ACCOUNT_ID: "Ledger account id"},
    unlinked="opens a new account at Ledger",
)
