"""The one place Relay reads its environment.

`load_env_file()` is how every process (the `relay` command, gunicorn's web app, the Celery
worker and beat) reads `.env` from its working directory, before anything else: real environment
variables win, and an empty value, in the file or in the environment, is the same as none (the
default). `load_config()` then reads every variable once, validates it and fails with a message
that names the bad variable, so a misconfigured deploy stops at start instead of at the first
webhook.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from relay.destinations import PLUGINS_VARIABLE, Registry
from relay.durations import EXAMPLES as DURATION_EXAMPLES
from relay.durations import parse_duration
from schemas.note_template import NoteTemplate, TemplateError
from schemas.sprig import ATTRIBUTES as SPRIG_ATTRIBUTE_NAMES
from schemas.sprig import DEFAULT_ATTRIBUTE_PREFIX, USER_ID_SOURCES

DEFAULT_SPRIG_API_URL = "https://api.sprig.com"
DEFAULT_SPRUCE_API_URL = "https://api.sprucehealth.com/v1"
DEFAULT_SPARKLOOP_API_URL = "https://api.sparkloop.app/v2"
DEFAULT_MAX_BODY_BYTES = 256 * 1024
# `relay dev`'s webhook token: refused by a web process whose store is not SQLite.
DEV_WEBHOOK_TOKEN = "relay-dev-token"
LOG_FORMATS = ("json", "text")
MIN_LOOKUP_KEY_LENGTH = 32
# SPRIG_ATTRIBUTE_PREFIX: a namespace for Relay's attributes among the product's own.
ATTRIBUTE_PREFIX_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
MAX_ATTRIBUTE_PREFIX_LENGTH = 64
# Where PaaS put the deployed commit, for SENTRY_RELEASE's default.
RELEASE_VARIABLES = ("HEROKU_SLUG_COMMIT", "SOURCE_VERSION", "RENDER_GIT_COMMIT")
# Every variable load_config reads (tests keep .env.example, app.json and the README in step).
VARIABLES = (
    "SPARKLOOP_WEBHOOK_TOKEN",
    "RELAY_MAX_BODY_BYTES",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_SSL_CERT_REQS",
    "RELAY_INSTANCE_PATH",
    "SPRIG_API_KEY",
    "SPRIG_API_URL",
    "SPRIG_USER_ID_SOURCE",
    "SPRIG_ATTRIBUTES",
    "SPRIG_ATTRIBUTE_PREFIX",
    "SPRUCE_API_TOKEN",
    "SPRUCE_API_URL",
    "SPRUCE_NOTE_MEMBER_IDS",
    "RELAY_SPRUCE_NOTE_TEMPLATE",
    "RELAY_SPRUCE_NOTE_TEMPLATE_FILE",
    "RELAY_ROUTES",
    "RELAY_VENDOR_TIMEOUT_S",
    "RELAY_RETRY_BASE_S",
    "RELAY_RETRY_MAX_ATTEMPTS",
    "RELAY_RETRY_MAX_AGE",
    "SPRIG_RATE_LIMIT",
    "SPRUCE_RATE_LIMIT",
    "RELAY_BREAKER_COOLDOWN",
    "RELAY_SHUTDOWN_GRACE",
    "SPARKLOOP_API_KEY",
    "RELAY_PUBLIC_URL",
    "SPARKLOOP_API_URL",
    "SPARKLOOP_RATE_LIMIT",
    "RELAY_RETENTION",
    "RELAY_RETENTION_FAILED",
    "RELAY_RETENTION_PURGE",
    "LOG_FORMAT",
    "METRICS_TOKEN",
    "SENTRY_DSN",
    "SENTRY_ENVIRONMENT",
    "SENTRY_RELEASE",
    "SENTRY_TRACES_SAMPLE_RATE",
    "RELAY_PROXY_HOPS",
    "RELAY_PAYLOAD_KEYS",
    "RELAY_LOOKUP_KEY",
    "RELAY_PLUGINS",
)
ENV_FILE = ".env"
# RELAY_RETENTION_PURGE: beat purges what the retention ages allow once a day, unless off.
RETENTION_PURGE_CHOICES = ("daily", "off")
# Heroku Redis presents a self-signed certificate: such deploys set REDIS_SSL_CERT_REQS=none.
_SSL_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class CallRate:
    """A configured pace: `limit` calls per `period_s` seconds, e.g. SPRIG_RATE_LIMIT=1000/300s."""

    limit: int
    period_s: float

    @property
    def interval_s(self) -> float:
        return self.period_s / self.limit


@dataclass(frozen=True)
class Config:
    webhook_tokens: tuple[str, ...]
    database_url: str
    broker_url: str
    redis_url: str | None
    redis_ssl_cert_reqs: int
    sprig_api_key: str | None
    sprig_api_url: str
    spruce_api_token: str | None
    spruce_api_url: str
    spruce_note_member_ids: tuple[str, ...]
    sprig_user_id_source: str
    sentry_dsn: str | None
    max_body_bytes: int
    routes_override: dict[str, tuple[str, ...]] = field(default_factory=dict)
    vendor_timeout_s: float = 10.0
    retry_base_s: float = 30.0
    retry_max_attempts: int = 15
    retry_max_age_s: float = 24 * 3600.0
    breaker_cooldown_s: float = 30.0
    sprig_rate_limit: CallRate = None  # type: ignore[assignment]
    spruce_rate_limit: CallRate = None  # type: ignore[assignment]
    sparkloop_api_key: str | None = None
    sparkloop_api_url: str = DEFAULT_SPARKLOOP_API_URL
    sparkloop_rate_limit: CallRate = None  # type: ignore[assignment]
    retention_s: float = 30 * 86400.0
    retention_failed_s: float = 90 * 86400.0
    retention_purge_daily: bool = True
    log_format: str = "text"
    metrics_token: str | None = None
    sentry_environment: str = "production"
    sentry_release: str | None = None
    sentry_traces_sample_rate: float = 0.0
    proxy_hops: int = 1
    shutdown_grace_s: float = 20.0
    payload_keys: tuple[str, ...] = ()
    lookup_key: str | None = None
    # None: each event's own note text (schemas.spruce), as before templates.
    spruce_note_template: NoteTemplate | None = None
    # None: every attribute (schemas.sprig.ATTRIBUTES).
    sprig_attributes: frozenset[str] | None = None
    sprig_attribute_prefix: str = DEFAULT_ATTRIBUTE_PREFIX
    public_url: str | None = None
    # Every destination this process knows (relay.destinations), the configured ones' settings.
    destinations: Registry = field(default_factory=Registry)
    configured_destinations: frozenset[str] = frozenset()
    destination_settings: Mapping[str, object] = field(default_factory=dict)

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_config(environ: dict[str, str] | None = None, *, instance_path: str | Path) -> Config:
    env = dict(os.environ if environ is None else environ)
    instance = Path(instance_path)
    redis_url = _optional(env, "REDIS_URL")
    if redis_url is not None:
        _check_scheme("REDIS_URL", redis_url, ("redis", "rediss"))
    destinations = _destinations(env)
    # A vendor without its credential gets no deliveries planned.
    configured = frozenset(name for name, d in destinations.items() if _optional(env, d.credential))
    return Config(
        destinations=destinations,
        configured_destinations=configured,
        destination_settings={name: destinations[name].settings(env) for name in sorted(configured)},
        webhook_tokens=_token_list(env.get("SPARKLOOP_WEBHOOK_TOKEN", "")),
        database_url=database_url(env.get("DATABASE_URL"), instance),
        broker_url=redis_url or "filesystem://",
        redis_url=redis_url,
        redis_ssl_cert_reqs=_SSL_CERT_REQS[_choice(env, "REDIS_SSL_CERT_REQS", tuple(_SSL_CERT_REQS))],
        sprig_api_key=_optional(env, "SPRIG_API_KEY"),
        sprig_api_url=_http_url(env, "SPRIG_API_URL", DEFAULT_SPRIG_API_URL),
        spruce_api_token=_optional(env, "SPRUCE_API_TOKEN"),
        spruce_api_url=_http_url(env, "SPRUCE_API_URL", DEFAULT_SPRUCE_API_URL),
        spruce_note_member_ids=tuple(_split(env.get("SPRUCE_NOTE_MEMBER_IDS", ""))),
        sprig_user_id_source=_choice(env, "SPRIG_USER_ID_SOURCE", USER_ID_SOURCES),
        sentry_dsn=_optional(env, "SENTRY_DSN"),
        max_body_bytes=_positive_int(env, "RELAY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        routes_override=_routes(env.get("RELAY_ROUTES"), destinations),
        vendor_timeout_s=float(_positive_int(env, "RELAY_VENDOR_TIMEOUT_S", 10)),
        retry_base_s=float(_positive_int(env, "RELAY_RETRY_BASE_S", 30)),
        retry_max_attempts=_positive_int(env, "RELAY_RETRY_MAX_ATTEMPTS", 15),
        retry_max_age_s=_duration(env, "RELAY_RETRY_MAX_AGE", "24h"),
        breaker_cooldown_s=_duration(env, "RELAY_BREAKER_COOLDOWN", "30s"),
        # Sprig publishes 1000 per 5 minutes per key; Spruce publishes no number, so start
        # conservative and let its s-ratelimit-* headers slow Relay further.
        sprig_rate_limit=_rate_limit(env, "SPRIG_RATE_LIMIT", "1000/300s"),
        spruce_rate_limit=_rate_limit(env, "SPRUCE_RATE_LIMIT", "50/60s"),
        # Only `relay backfill` calls SparkLoop: 60 per rolling minute per key (the older,
        # lower of the two published figures).
        sparkloop_api_key=_optional(env, "SPARKLOOP_API_KEY"),
        sparkloop_api_url=_http_url(env, "SPARKLOOP_API_URL", DEFAULT_SPARKLOOP_API_URL),
        sparkloop_rate_limit=_rate_limit(env, "SPARKLOOP_RATE_LIMIT", "60/60s"),
        # `relay events purge` keeps terminal events this long; failed and invalid ones longer.
        retention_s=_duration(env, "RELAY_RETENTION", "30d"),
        retention_failed_s=_duration(env, "RELAY_RETENTION_FAILED", "90d"),
        retention_purge_daily=_choice(env, "RELAY_RETENTION_PURGE", RETENTION_PURGE_CHOICES) == "daily",
        log_format=log_format(env),
        metrics_token=_optional(env, "METRICS_TOKEN"),
        sentry_environment=_optional(env, "SENTRY_ENVIRONMENT") or "production",
        sentry_release=_optional(env, "SENTRY_RELEASE")
        or next((env[name].strip() for name in RELEASE_VARIABLES if env.get(name, "").strip()), None),
        sentry_traces_sample_rate=_fraction(env, "SENTRY_TRACES_SAMPLE_RATE", 0.0),
        proxy_hops=_whole(env, "RELAY_PROXY_HOPS", 1),
        shutdown_grace_s=_duration(env, "RELAY_SHUTDOWN_GRACE", "20s"),
        payload_keys=_payload_keys(env.get("RELAY_PAYLOAD_KEYS", "")),
        lookup_key=_lookup_key(env),
        spruce_note_template=_note_template(env, instance),
        sprig_attributes=_sprig_attributes(env),
        sprig_attribute_prefix=_sprig_attribute_prefix(env),
        public_url=_public_url(env),
    )


def load_env_file(path: str | Path = ENV_FILE, environ=None) -> list[str]:
    """Read `.env` (in the working directory) into the environment, as every process does at
    start; return the names it set. A variable the environment already holds wins; an empty one,
    in the file or in the environment, is the same as an unset one: the environment loses it,
    so whatever reads it next (this module, `relay dev`, a child process) sees the default."""
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    for name in VARIABLES:
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


def log_format(env: dict[str, str] | None = None) -> str:
    """LOG_FORMAT (of `env`, else of this process), else json when stderr is not a terminal (a
    PaaS, a container), text when it is."""
    value = _optional(os.environ if env is None else env, "LOG_FORMAT")
    if value is None:
        return "text" if sys.stderr.isatty() else "json"
    if value not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)} (got {value!r})")
    return value


def database_url(value: str | None, instance: Path) -> str:
    """Normalise DATABASE_URL for SQLAlchemy; default to a SQLite file under instance/."""
    if not value or not value.strip():
        return f"sqlite:///{instance / 'relay.sqlite3'}"
    value = value.strip()
    scheme = value.split("://", 1)[0] if "://" in value else ""
    # Heroku still hands out postgres://, which SQLAlchemy 2 no longer accepts.
    if scheme in ("postgres", "postgresql"):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    if scheme.startswith("postgresql+") or scheme.startswith("sqlite"):
        return value
    raise ConfigError(
        f"DATABASE_URL must be a postgres://, postgresql:// or sqlite:/// URL (got scheme {scheme or 'none'!r})"
    )


def _token_list(raw: str) -> tuple[str, ...]:
    return tuple(_split(raw))


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _check_scheme(name: str, value: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name} must be a URL starting with {allowed} and naming a host")


def _http_url(env: dict[str, str], name: str, default: str) -> str:
    value = _optional(env, name) or default
    _check_scheme(name, value, ("http", "https"))
    return value.rstrip("/")


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = _optional(env, name) or choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
    return value


def _positive_int(env: dict[str, str], name: str, default: int) -> int:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {raw!r})") from None
    if value <= 0:
        raise ConfigError(f"{name} must be greater than zero (got {value})")
    return value


def _whole(env: dict[str, str], name: str, default: int) -> int:
    """A whole number, zero allowed."""
    raw = _optional(env, name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number, 0 or more (got {raw!r})")
    return int(raw)


def _fraction(env: dict[str, str], name: str, default: float) -> float:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number from 0 to 1 (got {raw!r})")
    return value


def _payload_keys(raw: str) -> tuple[str, ...]:
    """RELAY_PAYLOAD_KEYS: Fernet keys, the first encrypting, all decrypting."""
    from cryptography.fernet import Fernet

    keys = tuple(_split(raw))
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                f"RELAY_PAYLOAD_KEYS: key {position} is not a Fernet key (32 url-safe "
                "base64-encoded bytes; make one with `relay keys new`)"
            ) from None
    return keys


def _lookup_key(env: dict[str, str]) -> str | None:
    """RELAY_LOOKUP_KEY: the secret the stored subscriber digests are keyed with (relay.subjects)."""
    value = _optional(env, "RELAY_LOOKUP_KEY")
    if value is not None and len(value) < MIN_LOOKUP_KEY_LENGTH:
        raise ConfigError(
            f"RELAY_LOOKUP_KEY must be at least {MIN_LOOKUP_KEY_LENGTH} characters of random "
            "text (make one with `relay keys new`)"
        )
    return value


def _public_url(env: dict[str, str]) -> str | None:
    """RELAY_PUBLIC_URL: where SparkLoop reaches this Relay (`relay doctor`, `relay sparkloop
    webhooks register` append /webhooks/sparkloop, and print it: so no credentials either)."""
    value = _optional(env, "RELAY_PUBLIC_URL")
    if value is None:
        return None
    _check_scheme("RELAY_PUBLIC_URL", value, ("http", "https"))
    parts = urlsplit(value)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(
            "RELAY_PUBLIC_URL must be a base URL without credentials, query or fragment, e.g. https://relay.example.com"
        )
    return value.rstrip("/")


def _note_template(env: dict[str, str], instance: Path) -> NoteTemplate | None:
    """RELAY_SPRUCE_NOTE_TEMPLATE, or the file RELAY_SPRUCE_NOTE_TEMPLATE_FILE names (a relative
    path is relative to the instance folder, RELAY_INSTANCE_PATH: every process of a deploy
    shares it, not a working directory); None when neither is set."""
    inline = _optional(env, "RELAY_SPRUCE_NOTE_TEMPLATE")
    file_name = _optional(env, "RELAY_SPRUCE_NOTE_TEMPLATE_FILE")
    if inline and file_name:
        raise ConfigError("RELAY_SPRUCE_NOTE_TEMPLATE and RELAY_SPRUCE_NOTE_TEMPLATE_FILE are both set: keep one")
    if file_name:
        name, path = "RELAY_SPRUCE_NOTE_TEMPLATE_FILE", instance / Path(file_name).expanduser()
        try:
            text = path.read_text(encoding="utf-8").rstrip("\r\n")  # the file's last line break
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"{name}: cannot read {path} ({reason})") from None
    elif inline:
        name, text = "RELAY_SPRUCE_NOTE_TEMPLATE", inline
    else:
        return None
    try:
        return NoteTemplate.parse(text)
    except TemplateError as exc:
        raise ConfigError(f"{name} {exc}") from None


def _sprig_attributes(env: dict[str, str]) -> frozenset[str] | None:
    """SPRIG_ATTRIBUTES: the comma-separated attributes (names without the prefix) Sprig gets."""
    names = _split(env.get("SPRIG_ATTRIBUTES", ""))
    if not names:
        return None
    unknown = [name for name in names if name not in SPRIG_ATTRIBUTE_NAMES]
    if unknown:
        raise ConfigError(
            f"SPRIG_ATTRIBUTES has an unknown attribute {unknown[0]!r}; choose from {', '.join(SPRIG_ATTRIBUTE_NAMES)}"
        )
    return frozenset(names)


def _sprig_attribute_prefix(env: dict[str, str]) -> str:
    value = _optional(env, "SPRIG_ATTRIBUTE_PREFIX")
    if value is None:
        return DEFAULT_ATTRIBUTE_PREFIX
    if len(value) > MAX_ATTRIBUTE_PREFIX_LENGTH or not set(value) <= ATTRIBUTE_PREFIX_CHARACTERS:
        raise ConfigError(
            f"SPRIG_ATTRIBUTE_PREFIX must be 1 to {MAX_ATTRIBUTE_PREFIX_LENGTH} letters, "
            f"digits, _, . or - (got {value!r})"
        )
    return value


def _duration(env: dict[str, str], name: str, default: str) -> float:
    raw = _optional(env, name) or default
    try:
        return parse_duration(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a duration like {DURATION_EXAMPLES} (got {raw!r})") from None


def _rate_limit(env: dict[str, str], name: str, default: str) -> CallRate:
    raw = _optional(env, name) or default
    count, _, period = raw.partition("/")
    try:
        seconds = parse_duration(period)
    except ValueError:
        seconds = None
    if not count.strip().isdigit() or int(count) <= 0 or seconds is None:
        raise ConfigError(f"{name} must look like 1000/300s: calls per period (got {raw!r})")
    return CallRate(int(count), seconds)


def _destinations(env: dict[str, str]) -> Registry:
    try:
        return Registry.discover(_optional(env, PLUGINS_VARIABLE))
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{PLUGINS_VARIABLE} must name importable modules that each declare a DESTINATION ({exc})"
        ) from None


def _routes(raw: str | None, known: Registry) -> dict[str, tuple[str, ...]]:
    """RELAY_ROUTES: JSON object {event_type: [destination, ...]} merged over the defaults."""
    if not raw or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"RELAY_ROUTES must be a JSON object: {exc.msg}") from None
    if not isinstance(parsed, dict):
        raise ConfigError("RELAY_ROUTES must be a JSON object of event type -> list of destinations")
    routes = {}
    for event_type, destinations in parsed.items():
        if not isinstance(destinations, list) or any(d not in known for d in destinations):
            raise ConfigError(f"RELAY_ROUTES[{event_type!r}] must be a list drawn from {', '.join(known)}")
        routes[event_type] = tuple(destinations)
    return routes
