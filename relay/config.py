"""The one place Relay reads its environment.

`load_env_file()` is how every process (the `relay` command, gunicorn's web app, the Celery
worker and beat) reads `.env` from its working directory, before anything else: real environment
variables win, and an empty value, in the file or in the environment, is the same as none (the
default). `load_config()` then reads every declared setting once (relay.settings: Relay's own in
relay.core_settings, each destination's group), validates it and fails with a message that names
every bad variable, so a misconfigured deploy stops at start instead of at the first webhook.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from relay.core_settings import (
    ALERTS,
    CONSOLE,
    CORE_GROUPS,
    DELIVERY,
    LOG_FORMATS,
    OBSERVABILITY,
    PLATFORM,
    RETENTION,
    SECURITY,
    SPARKLOOP,
    STORE,
    WEBHOOK,
    ReserveShares,
    reserves_of,
    terminal_format,
)
from relay.destinations import ENTRY_POINT_GROUP, PLUGINS_VARIABLE, Destination, Registry
from relay.settings import CallRate, Choice, ConfigError, SettingsGroup, invalid, read_groups

__all__ = ["DEV_WEBHOOK_TOKEN", "VARIABLES", "CallRate", "Config", "ConfigError", "load_config", "load_env_file"]

T = TypeVar("T")

# `relay dev`'s webhook token: refused by a web process whose store is not SQLite.
DEV_WEBHOOK_TOKEN = "relay-dev-token"
ENV_FILE = ".env"
# The installed destinations (entry points; relay.destinations): their settings are documented
# with Relay's (.env.example, app.json, the README's table) and cleared by load_env_file.
INSTALLED = Registry.discover()
DESTINATION_GROUPS: tuple[SettingsGroup[Any], ...] = tuple(d.settings for d in INSTALLED.values())
# What the documentation lists, in its order: .env.example, app.json, the README's table.
DOCUMENTED_GROUPS: tuple[SettingsGroup[Any], ...] = (
    WEBHOOK,
    STORE,
    *DESTINATION_GROUPS,
    DELIVERY,
    SPARKLOOP,
    RETENTION,
    OBSERVABILITY,
    ALERTS,
    SECURITY,
    CONSOLE,
    PLATFORM,
)
# Every variable load_config reads (load_env_file, tests/test_compose.py).
VARIABLES = tuple(name for group in CORE_GROUPS + DESTINATION_GROUPS for name in group.names)


@dataclass(frozen=True)
class Config:
    webhook_tokens: tuple[str, ...]
    max_body_bytes: int
    database_url: str
    broker_url: str
    redis_url: str | None
    redis_ssl_cert_reqs: int
    routes_override: dict[str, tuple[str, ...]]
    vendor_timeout_s: float
    retry_base_s: float
    retry_max_attempts: int
    retry_max_age_s: float
    breaker_cooldown_s: float
    reserve_catch_up: float
    reserve_retry: float
    reserve_live: float
    park_probe_s: float
    # Each destination's reserves: its own where it declares and sets them (RELAY_<NAME>_RESERVE_*), else Relay's.
    destination_reserves: Mapping[str, ReserveShares]
    shutdown_grace_s: float
    sparkloop_api_key: str | None
    public_url: str | None
    sparkloop_api_url: str
    sparkloop_rate_limit: CallRate
    retention_s: float
    retention_failed_s: float
    retention_purge_daily: bool
    log_format: str
    metrics_token: str | None
    sentry_dsn: str | None
    sentry_environment: str
    sentry_release: str | None
    sentry_traces_sample_rate: float
    proxy_hops: int
    payload_keys: tuple[str, ...]
    lookup_key: str | None
    operator: str | None
    console_secret_key: str | None
    console_idle_s: float
    alert_webhook_url: str | None
    alert_webhook_secret: str | None
    alert_slack_url: str | None
    alert_repeat_s: float
    alert_backlog_age_s: float
    # Every destination this process knows (relay.destinations: the installed ones and RELAY_PLUGINS').
    destinations: Registry
    # Each destination group's settings object by group name (`of`).
    destination_settings: Mapping[str, Any]
    # Destinations with credentials: a vendor without a key gets no deliveries planned.
    configured_destinations: frozenset[str]

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def alert_sinks(self) -> tuple[str, ...]:
        """Where alerts go (operations.alerts): the webhook, Slack and Sentry, those configured."""
        wanted = (("webhook", self.alert_webhook_url), ("slack", self.alert_slack_url), ("sentry", self.sentry_dsn))
        return tuple(sink for sink, setting in wanted if setting)

    def configured(self) -> dict[str, Destination]:
        """The destinations that have credentials, by name."""
        return {name: self.destinations[name] for name in sorted(self.configured_destinations)}

    def reserves(self, name: str) -> ReserveShares:
        """The reserves of the calls to `name` (a destination, or SparkLoop: Relay's own)."""
        relays = ReserveShares(self.reserve_catch_up, self.reserve_retry, self.reserve_live)
        return self.destination_reserves.get(name, relays)

    def of(self, group: SettingsGroup[T]) -> T:
        """A destination's settings, as its group built them."""
        return cast(T, self.destination_settings[group.name])


def load_config(
    environ: Mapping[str, str] | None = None, *, instance_path: str | Path, destinations: Registry | None = None
) -> Config:
    """Relay's settings and each destination's: `destinations`, else those installed and those
    RELAY_PLUGINS names (found first: they declare their settings)."""
    env = dict(os.environ if environ is None else environ)
    registry = _destinations(env) if destinations is None else destinations
    groups = [destination.settings for destination in registry.values()]
    read = read_groups((*CORE_GROUPS, *groups), env, Path(instance_path))
    core: dict[str, Any] = {}
    for group in CORE_GROUPS:
        core.update(read.pop(group.name))
    names = list(registry)
    for event_type, wanted in core["routes_override"].items():
        if not isinstance(wanted, tuple) or any(name not in names for name in wanted):
            raise invalid("RELAY_ROUTES", f"[{event_type!r}] must be a list drawn from {', '.join(names)}")
    configured = frozenset(
        group.name for group in groups if group.configured is not None and group.configured(read[group.name])
    )
    reserves = {
        name: reserves_of(name, getattr(read[destination.settings.name], "reserves", {}), core)
        for name, destination in registry.items()
    }
    return Config(
        **core,
        destination_reserves=reserves,
        destinations=registry,
        destination_settings=read,
        configured_destinations=configured,
    )


def _destinations(env: Mapping[str, str]) -> Registry:
    try:
        found = Registry.discover(env.get(PLUGINS_VARIABLE))
    except (ImportError, AttributeError) as exc:
        problem = f"must name importable modules that each declare a DESTINATION ({exc})"
        raise invalid(PLUGINS_VARIABLE, problem) from None
    if not found:  # Relay's own are entry points of its installed package
        raise ConfigError(
            f"no destination found: Relay is not installed (its entry points, group {ENTRY_POINT_GROUP}, "
            "declare Sprig and Spruce): run it through ./run, or install it (pip install .)"
        )
    return found


def load_env_file(
    path: str | Path = ENV_FILE, environ: MutableMapping[str, str] | None = None, names: Sequence[str] = VARIABLES
) -> list[str]:
    """Read `.env` (in the working directory) into the environment, as every process does at
    start; return the names it set. A variable the environment already holds wins; an empty one,
    in the file or in the environment, is the same as an unset one: the environment loses it
    (of Relay's variables, `names`), so whatever reads it next (this module, `relay dev`, a child
    process) sees the default."""
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    for name in names:
        if name in environ and not environ[name].strip():
            del environ[name]
    path = Path(path)
    if not path.is_file():
        return []
    loaded = []
    for name, value in dotenv_values(path, encoding="utf-8").items():
        if value is None or not value.strip() or environ.get(name, "").strip():
            continue
        environ[name] = value
        loaded.append(name)
    return loaded


def log_format(env: Mapping[str, str] | None = None) -> str:
    """LOG_FORMAT (of `env`, else of this process), else json when stderr is not a terminal (a
    PaaS, a container), text when it is."""
    value = (os.environ if env is None else env).get("LOG_FORMAT", "").strip()
    if not value:
        return terminal_format()
    try:
        return str(Choice(LOG_FORMATS).parse(value))
    except ValueError as exc:
        raise invalid("LOG_FORMAT", str(exc)) from None
