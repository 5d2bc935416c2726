"""The destinations Relay delivers to: each vendor's package (workers/<vendor>/) declares one
`Destination`, the one object that says everything Relay knows of that vendor.

How they are found: through Python's standard plug-in mechanism, entry points (group
`relay.destinations` in pyproject.toml, as pytest, Flask and Celery find theirs), plus the
modules RELAY_PLUGINS names (for a package that is not installed, as PYTEST_PLUGINS does for
pytest: a test's own folder). Entry points let this module, in the foundation, load the engine's
declarations without importing a layer above: the intake plans deliveries (relay.planning) from
what each destination receives, and must not load the engine.

So a declaration module is light: at its top it imports only schemas/, relay/ and its own
package's light modules (its settings, what it receives), and its heavy parts (client,
delivery, doctor probe, erasure step) are small functions that import them on first call:
imports inside functions, not "module:attribute" strings, so that the architecture test sees
them (tests/test_architecture.py checks both, and what the intake loads).

The registry is found once per process by the configuration (relay.config), since each
destination declares settings of its own that it reads; Config and the runtime carry it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from relay.settings import SettingsGroup

ENTRY_POINT_GROUP = "relay.destinations"
PLUGINS_VARIABLE = "RELAY_PLUGINS"


@dataclass(frozen=True)
class SandboxMount:
    """Where `relay dev`'s sandbox imitates this vendor, when `credential_variable` is unset: the
    credential the sandbox accepts, and the URL variable pointed at its path there."""

    credential_variable: str
    credential: str
    url_variable: str
    path: str
    # Variables `relay dev` sets when it sandboxes the vendor and they are unset.
    settings: Mapping[str, str] = field(default_factory=dict)
    # A key the destination remembers (Destination.remembers) -> the sandbox's records of that
    # kind (an attribute of sandbox.state, by id): `relay dev` says when the store remembers
    # ids the sandbox lost.
    records: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Erasure:
    """A vendor's part of an erasure request (workers.erasure has the store's): what it would ask
    the vendor about a person (counts, for a dry run), and the request itself, which returns the
    vendor's request ids and raises VendorError or Deferred when the vendor does not take it."""

    asked: Callable[[Any, Any], dict[str, int]]  # (person, config)
    request: Callable[[Any, Any], list[str]]  # (person, runtime)
    # What the vendor does once it took the request, as `relay subscribers forget` says it.
    then: str = ""


@dataclass(frozen=True, eq=False)  # one object per vendor: the same when it is this one
class Destination:
    """A vendor Relay delivers to. Heavy parts are called with the process's runtime (its client),
    its Config (the doctor's probe) or a delivery's context (workers.context)."""

    name: str
    # Its settings (relay.settings): names, defaults, documentation, what is secret, and when
    # it is configured (a vendor without credentials gets no delivery planned). Config.of(group)
    # gives what they were read as.
    settings: SettingsGroup[Any]
    # Event type -> what it receives (a value of its own kind, handed to `deliver`); the keys
    # are the event types it receives unless RELAY_ROUTES says otherwise.
    receives: Mapping[str, Any]
    # What it receives for an event type RELAY_ROUTES sends it and `receives` does not name.
    default_sends: Any
    # The runtime's client for the configured account (the engine paces it per run): a
    # workers.vendor_http.VendorClient, whose hooks read the vendor's error bodies, rate-limit
    # headers and request ids its own way (the shared HTTP layer names no vendor).
    client: Callable[[Any], Any]
    # Performs one delivery; returns "superseded" when nothing was left to send, else None.
    deliver: Callable[[Any, Any], str | None]
    # The most vendor calls one delivery can make (what it sends, subscribers affected).
    most_calls: Callable[[Any, int], int]
    # `relay doctor`'s checks of the account (relay.checks.Check), given the Config and a timeout:
    # one harmless read each, straight to the vendor; "not configured" without the credential.
    probe: Callable[[Any, float], list[Any]]
    # The names of the probe's checks (listed as skipped when the configuration is invalid).
    checks: tuple[str, ...]
    # Where `relay dev`'s sandbox imitates it, if it does.
    sandbox: SandboxMount | None = None
    # Its part of an erasure request, if the vendor takes one (Sprig purges visitors).
    erasure: Erasure | None = None
    # Without one: what of the person stays at the vendor, and why (`relay subscribers forget`).
    unerased: str = ""
    # Step times a forced replay keeps (workers.context.Progress); everything else is forgotten.
    kept_on_force: tuple[str, ...] = ()
    # What it remembers of a subscriber between deliveries (workers.identity: its ids at the
    # vendor, versions), key -> how output names it (never its value). `relay subscribers
    # unlink` drops them, an erasure deletes them.
    remembers: Mapping[str, str] = field(default_factory=dict)
    # What its next delivery for a subscriber does without them (`relay subscribers unlink` says it).
    unlinked: str = ""

    def sends(self, event_type: str) -> Any:
        return self.receives.get(event_type) or self.default_sends


class Registry(Mapping[str, Destination]):
    """Every destination this process knows, by name, in a stable order."""

    def __init__(self, destinations: Mapping[str, Destination] | None = None):
        self._by_name = dict(sorted((destinations or {}).items()))

    @classmethod
    def discover(cls, plugins: str | None = None) -> Registry:
        """The installed destinations (entry points), and those the modules in `plugins` (a
        RELAY_PLUGINS value: comma-separated module names, each with a DESTINATION) declare."""
        found = {}
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            destination = entry_point.load()
            found[destination.name] = destination
        for module in (part.strip() for part in (plugins or "").split(",")):
            if module:
                destination = importlib.import_module(module).DESTINATION
                found[destination.name] = destination
        return cls(found)

    def __getitem__(self, name: str) -> Destination:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __hash__(self) -> int:
        return hash(tuple(self._by_name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Registry) and self._by_name == other._by_name

    def __repr__(self) -> str:
        return f"Registry({', '.join(self._by_name)})"

    def receiving(self, event_type: str) -> tuple[str, ...]:
        """The destinations that receive `event_type` unless RELAY_ROUTES says otherwise."""
        return tuple(name for name, destination in self._by_name.items() if event_type in destination.receives)
