"""Relay's own settings, those of every process, a group per `.env.example` section: each
declared once (relay.settings). Each destination declares its own group (workers/sprig/settings.py,
workers/spruce/settings.py, found through relay.destinations); relay.config reads them all.
"""

from __future__ import annotations

import base64
import binascii
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import marshmallow as ma
from cryptography.fernet import Fernet

from relay.settings import (
    Choice,
    CommaList,
    Duration,
    Fraction,
    Json,
    Parsed,
    Rate,
    Reading,
    Setting,
    SettingsGroup,
    Text,
    Url,
    Whole,
    invalid,
)

LOG_FORMATS = ("json", "text")
MIN_LOOKUP_KEY_LENGTH = 32
# A random 32-character key of `relay keys new`'s alphabet has about 25 different characters.
MIN_CONSOLE_KEY_DISTINCT = 12
# Where PaaS put the deployed commit, for SENTRY_RELEASE's default.
RELEASE_VARIABLES = ("HEROKU_SLUG_COMMIT", "SOURCE_VERSION", "RENDER_GIT_COMMIT")
# The Standard Webhooks spec's secrets: "whsec_" and the base64 of 24 to 64 random bytes.
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = (24, 64)
MIN_ALERT_REPEAT_S = 60
# Heroku Redis presents a self-signed certificate: such deploys set REDIS_SSL_CERT_REQS=none.
_SSL_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


class DatabaseUrl(Parsed):
    """postgres:// (Heroku still hands it out; SQLAlchemy 2 no longer accepts it), postgresql://,
    postgresql+driver:// or sqlite:///, made SQLAlchemy's."""

    def parse(self, text: str) -> str:
        scheme = text.split("://", 1)[0] if "://" in text else ""
        if scheme in ("postgres", "postgresql"):
            return "postgresql+psycopg://" + text.split("://", 1)[1]
        if scheme.startswith(("postgresql+", "sqlite")):
            return text
        raise ValueError(f"must be a postgres://, postgresql:// or sqlite:/// URL (got scheme {scheme or 'none'!r})")


class Share(Parsed):
    """A share of a whole: 25% (or 0.25)."""

    def parse(self, text: str) -> float:
        number = text.strip().removesuffix("%")
        try:
            value = float(number) / (100 if text.strip().endswith("%") else 1)
        except ValueError:
            value = -1.0
        if not 0.0 <= value < 1.0:
            raise ValueError(f"must be a share like 25% (from 0% to under 100%) (got {text!r})")
        return value


def percent(share: float) -> str:
    """A share as an operator writes it: 25% for 0.25, 2.5% for 0.025."""
    return f"{share * 100:g}%"


# Each lane's reserve (workers.reserves), from the highest: each keeps no more than the one before.
RESERVE_LANES = ("catch_up", "retry", "live")
RESERVE_ORDER = "catch-up keeps at least what retry keeps, retry at least what live keeps"


@dataclass(frozen=True)
class ReserveShares:
    """Each lane's reserve, a share of a window's limit."""

    catch_up: float
    retry: float
    live: float


def reserve_overrides(destination: str, title: str, lanes: tuple[str, ...] = RESERVE_LANES) -> tuple[Setting, ...]:
    """The settings of a destination's own reserves, RELAY_<DESTINATION>_RESERVE_<LANE>, for its
    group to declare (workers/spruce/settings.py); its build takes them out with `own_reserves`."""
    return tuple(
        Setting(
            f"RELAY_{destination.upper()}_RESERVE_{lane.upper()}",
            f"reserve_{lane}",
            Share(),
            shown_default=f"`RELAY_RESERVE_{lane.upper()}`",
            doc=f"the {lane.replace('_', '-')} reserve of {title}'s windows alone, a share like 25%",
        )
        for lane in lanes
    )


def own_reserves(values: dict[str, Any]) -> dict[str, float]:
    """Take a destination's own reserves (`reserve_overrides`) out of its group's values: those
    set, by lane."""
    taken = {lane: values.pop(f"reserve_{lane}", None) for lane in RESERVE_LANES}
    return {lane: share for lane, share in taken.items() if share is not None}


def reserves_of(destination: str, own: Mapping[str, float], relays: Mapping[str, Any]) -> ReserveShares:
    """A destination's `own` reserves (by lane) over Relay's (`relays`: RELAY_RESERVE_*'s values);
    a ConfigError naming the destination's variable when a lane would keep more than the one
    above it."""
    named = [
        (f"RELAY_{destination.upper()}_RESERVE_{lane.upper()}", own[lane], True)
        if lane in own
        else (f"RELAY_RESERVE_{lane.upper()}", relays[f"reserve_{lane}"], False)
        for lane in RESERVE_LANES
    ]
    _in_order(named)
    return ReserveShares(*(share for _, share, _ in named))


def _in_order(named: list[tuple[str, float, bool]]) -> None:
    """Each (variable, share, whether a destination's own) keeps no more than the one before."""
    for (higher, high, higher_own), (lower, low, lower_own) in pairwise(named):
        if low <= high:
            continue
        if higher_own and not lower_own:  # name the destination's variable: it is the one to change
            raise invalid(higher, f"must be at least {lower} ({percent(low)}) (got {percent(high)}): {RESERVE_ORDER}")
        raise invalid(lower, f"must be at most {higher} ({percent(high)}) (got {percent(low)}): {RESERVE_ORDER}")


class Routes(Json):
    """{event_type: [destination, ...]}, merged over the event registry's routes; load_config
    checks the destinations' names."""

    def parse(self, text: str) -> dict[str, tuple[str, ...]]:
        parsed = super().parse(text)
        if not isinstance(parsed, dict):
            raise ValueError("must be a JSON object of event type -> list of destinations")
        return {event: tuple(names) if isinstance(names, list) else names for event, names in parsed.items()}


class LookupKey(Parsed):
    def parse(self, text: str) -> str:
        if len(text) < MIN_LOOKUP_KEY_LENGTH:
            raise ValueError(
                f"must be at least {MIN_LOOKUP_KEY_LENGTH} characters of random text (make one with `relay keys new`)"
            )
        return text


def _fernet_key(position: int, key: str) -> None:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise ValueError(
            f": key {position} is not a Fernet key (32 url-safe base64-encoded bytes; make one with `relay keys new`)"
        ) from None


WEBHOOK = SettingsGroup(
    "webhook",
    "Webhook",
    build=lambda r: r.values,
    settings=(
        Setting(
            "SPARKLOOP_WEBHOOK_TOKEN",
            "webhook_tokens",
            CommaList(),
            secret=True,
            shown_default="– (required by the web process)",
            heroku={"required": True},
            doc="the token SparkLoop sends in `SparkLoop-Token` (SparkLoop's Webhooks page, Account Settings > "
            "Integrations); comma-separate two while rotating. `relay-dev-token` is refused unless `DATABASE_URL` "
            "is SQLite",
        ),
        Setting(
            "RELAY_MAX_BODY_BYTES",
            "max_body_bytes",
            Whole(),
            default=str(256 * 1024),
            shown_default="`262144` (256 KiB)",
            doc="webhook body limit in bytes (413 above it)",
        ),
    ),
)


def _store(reading: Reading) -> dict[str, Any]:
    redis_url = reading["redis_url"]
    return {
        "database_url": reading["database_url"] or f"sqlite:///{reading.instance / 'relay.sqlite3'}",
        "redis_url": redis_url,
        "broker_url": redis_url or "filesystem://",
        "redis_ssl_cert_reqs": _SSL_CERT_REQS[reading["redis_ssl_cert_reqs"]],
    }


STORE = SettingsGroup(
    "store",
    "Store and broker",
    build=_store,
    settings=(
        Setting(
            "DATABASE_URL",
            "database_url",
            DatabaseUrl(),
            secret=True,
            shown_default="SQLite file `instance/relay.sqlite3`",
            heroku=None,  # the PostgreSQL add-on sets it
            doc="`postgres://…` (Heroku's form is accepted), `postgresql://…` or `sqlite:///…`",
        ),
        Setting(
            "REDIS_URL",
            "redis_url",
            Url(("redis", "rediss")),
            secret=True,
            shown_default="a folder broker under `instance/broker` (one machine), throttle, breaker and locks "
            "inside each process (`relay dev` serves a Redis of its own)",
            heroku=None,  # the Redis add-on sets it
            doc="the Celery broker and the shared throttle, breaker and locks: `redis://…` or `rediss://…` (TLS)",
        ),
        Setting(
            "REDIS_SSL_CERT_REQS",
            "redis_ssl_cert_reqs",
            Choice(tuple(_SSL_CERT_REQS)),
            default="required",
            heroku={"value": "none", "required": True},
            doc="the TLS certificate check for `rediss://`: `required`, `optional` or `none` (for providers with "
            "self-signed certificates: Heroku Redis)",
        ),
        Setting(
            "RELAY_INSTANCE_PATH",
            "instance_path",
            Text(),
            shown_default="`instance/` in the checkout (`/app/instance` in the Docker image)",
            doc="where SQLite, the folder broker, the beat schedule, the note template file and `relay dev`'s files "
            "(`dev.env`, logs, the sandbox's state) live; not needed with PostgreSQL and Redis",
        ),
    ),
)


def _delivery(reading: Reading) -> dict[str, Any]:
    values = dict(reading.values)
    values["vendor_timeout_s"] = float(values["vendor_timeout_s"])
    values["retry_base_s"] = float(values["retry_base_s"])
    values["routes_override"] = values["routes_override"] or {}
    del values["plugins"]  # relay.config finds the destinations first (they declare settings of their own)
    _in_order([(f"RELAY_RESERVE_{lane.upper()}", values[f"reserve_{lane}"], False) for lane in RESERVE_LANES])
    return values


DELIVERY = SettingsGroup(
    "delivery",
    "Delivery",
    build=_delivery,
    settings=(
        Setting(
            "RELAY_ROUTES",
            "routes_override",
            Routes(),
            shown_default="– (the event registry's routes)",
            doc='JSON object overriding destinations per event type, e.g. `{"sync_subscriber": ["sprig", "spruce"]}`',
        ),
        Setting(
            "RELAY_PLUGINS",
            "plugins",
            CommaList(),
            shown_default="– (the installed destinations only)",
            doc="comma-separated modules that each declare a destination (a `DESTINATION`), beside the installed "
            "ones (entry points, group `relay.destinations`), as `PYTEST_PLUGINS` adds pytest plug-ins",
        ),
        Setting(
            "RELAY_VENDOR_TIMEOUT_S",
            "vendor_timeout_s",
            Whole(),
            default="10",
            doc="vendor HTTP read timeout in seconds",
        ),
        Setting(
            "RELAY_RETRY_BASE_S",
            "retry_base_s",
            Whole(),
            default="30",
            doc="first retry wait in seconds (capped exponential backoff with jitter from there)",
        ),
        Setting(
            "RELAY_RETRY_MAX_ATTEMPTS",
            "retry_max_attempts",
            Whole(),
            default="15",
            doc="failed attempts (not deferred ones) before a delivery is `failed`",
        ),
        Setting(
            "RELAY_RETRY_MAX_AGE",
            "retry_max_age_s",
            Duration(),
            default="24h",
            doc="age after which a pending delivery is `failed`",
        ),
        Setting(
            "RELAY_BREAKER_COOLDOWN",
            "breaker_cooldown_s",
            Duration(),
            default="30s",
            doc="how long the circuit breaker stays open after a run of transient failures",
        ),
        Setting(
            "RELAY_RESERVE_CATCH_UP",
            "reserve_catch_up",
            Share(),
            default="25%",
            doc="catch-up work (replays, backfills) stops while the remaining share of any window a vendor reports "
            "(Spruce's minute and day) is at or under this, or of its configured rate limit's when it reports none "
            "(Sprig); it is parked, and resumes when the window has room. At least `RELAY_RESERVE_RETRY`",
        ),
        Setting(
            "RELAY_RESERVE_RETRY",
            "reserve_retry",
            Share(),
            default="10%",
            doc="the same for a live delivery's later attempts (retries); at least `RELAY_RESERVE_LIVE`",
        ),
        Setting(
            "RELAY_RESERVE_LIVE",
            "reserve_live",
            Share(),
            default="2%",
            doc="the same for new live deliveries, on the windows a vendor reports only (a configured rate limit is "
            "live's own): kept for the clinic's other tools and for operators' hands",
        ),
        Setting(
            "RELAY_PARK_PROBE",
            "park_probe_s",
            Duration(),
            default="5m",
            doc="while work is parked on a vendor's daily window, one call of the highest waiting lane goes at most "
            "this often to read its headers again (the day's turnover is learned from them, not documented)",
        ),
        Setting(
            "RELAY_SHUTDOWN_GRACE",
            "shutdown_grace_s",
            Duration(),
            default="20s",
            doc="on SIGTERM, how long a worker lets deliveries under way finish before it hands them back; keep it "
            "under the platform's kill timeout (Heroku and Render 30 s, Fly's `kill_timeout`)",
        ),
    ),
)

SPARKLOOP = SettingsGroup(
    "sparkloop",
    "SparkLoop API (relay backfill, relay sparkloop webhooks, relay doctor)",
    build=lambda r: r.values,
    settings=(
        Setting(
            "SPARKLOOP_API_KEY",
            "sparkloop_api_key",
            Text(),
            secret=True,
            doc="SparkLoop API v2 key, used by `relay backfill`, `relay sparkloop webhooks` and `relay doctor`",
        ),
        Setting(
            "RELAY_PUBLIC_URL",
            "public_url",
            Url(base=True),
            doc="this Relay's public base URL (`https://relay.example.com`; no credentials, query or fragment): "
            "`relay sparkloop webhooks register` registers `RELAY_PUBLIC_URL/webhooks/sparkloop`, and "
            "`relay doctor` checks that SparkLoop holds it",
        ),
        Setting(
            "SPARKLOOP_API_URL",
            "sparkloop_api_url",
            Url(),
            default="https://api.sparkloop.app/v2",
            doc="SparkLoop API base URL",
        ),
        Setting(
            "SPARKLOOP_RATE_LIMIT",
            "sparkloop_rate_limit",
            Rate(),
            # Only `relay backfill` calls SparkLoop: 60 per rolling minute per key (the older,
            # lower of the two published figures).
            default="60/60s",
            doc="SparkLoop API calls per period, per key (the lower of its two published limits)",
        ),
    ),
)


def _retention(reading: Reading) -> dict[str, Any]:
    values = dict(reading.values)
    values["retention_purge_daily"] = values.pop("retention_purge") == "daily"
    return values


RETENTION = SettingsGroup(
    "retention",
    "Retention",
    build=_retention,
    settings=(
        Setting(
            "RELAY_RETENTION",
            "retention_s",
            Duration(),
            default="30d",
            doc="how old a finished event must be to be purged (daily by beat, or `relay events purge --retention`)",
        ),
        Setting(
            "RELAY_RETENTION_FAILED",
            "retention_failed_s",
            Duration(),
            default="90d",
            doc="the same for `failed` and `invalid` events, kept longer to be looked at",
        ),
        Setting(
            "RELAY_RETENTION_PURGE",
            "retention_purge",
            # Beat purges what the retention ages allow once a day, unless off.
            Choice(("daily", "off")),
            default="daily",
            doc="`daily`: beat purges what `RELAY_RETENTION` and `RELAY_RETENTION_FAILED` allow every day at "
            '03:00 UTC, in batches (see "Retention"; `relay doctor` shows the last run); `off`: only '
            "`relay events purge --retention` does",
        ),
    ),
)


def _observability(reading: Reading) -> dict[str, Any]:
    values = dict(reading.values)
    values["log_format"] = values["log_format"] or terminal_format()
    env = reading.environ
    platform = next((env[name].strip() for name in RELEASE_VARIABLES if env.get(name, "").strip()), None)
    values["sentry_release"] = values["sentry_release"] or platform
    return values


OBSERVABILITY = SettingsGroup(
    "observability",
    "Logs, metrics and Sentry",
    build=_observability,
    settings=(
        Setting(
            "LOG_FORMAT",
            "log_format",
            Choice(LOG_FORMATS),
            shown_default="`json` when stderr is not a terminal, else `text` (`relay dev`: `text`)",
            heroku={"value": "json"},
            doc="`json`: every line of web, worker and beat is one JSON object; or `text`",
        ),
        Setting(
            "METRICS_TOKEN",
            "metrics_token",
            Text(),
            secret=True,
            shown_default="– (`/metrics` open)",
            heroku={"generator": "secret"},
            doc="when set, `GET /metrics` needs `Authorization: Bearer <token>` (401 without, 403 wrong)",
        ),
        Setting(
            "SENTRY_DSN",
            "sentry_dsn",
            Text(),
            secret=True,
            shown_default="– (Sentry off)",
            doc="when set, Sentry starts (Flask, Celery and logging integrations; `data_collection` with nothing "
            "personal, no request bodies, a scrubber on every event and breadcrumb); its cron monitor "
            "`relay-sweep` pages when beat stops",
        ),
        Setting(
            "SENTRY_ENVIRONMENT",
            "sentry_environment",
            Text(),
            default="production",
            doc="Sentry's environment name",
        ),
        Setting(
            "SENTRY_RELEASE",
            "sentry_release",
            Text(),
            shown_default="the platform's commit: " + ", ".join(f"`{name}`" for name in RELEASE_VARIABLES),
            doc="Sentry's release (on Heroku, `heroku labs:enable runtime-dyno-metadata` sets `HEROKU_SLUG_COMMIT`)",
        ),
        Setting(
            "SENTRY_TRACES_SAMPLE_RATE",
            "sentry_traces_sample_rate",
            Fraction(),
            default="0",
            shown_default="`0` (no tracing)",
            doc="share of requests and tasks traced for Sentry's performance pages (0 to 1)",
        ),
    ),
)

SECURITY = SettingsGroup(
    "security",
    "Security",
    build=lambda r: r.values,
    settings=(
        Setting(
            "RELAY_PROXY_HOPS",
            "proxy_hops",
            Whole(minimum=0),
            default="1",
            doc="proxies in front of the web (the PaaS router) trusted for `X-Forwarded-For/Proto/Host/Port`; "
            "`0` trusts none",
        ),
        Setting(
            "RELAY_PAYLOAD_KEYS",
            "payload_keys",
            CommaList(_fernet_key),
            secret=True,
            shown_default="– (payloads stored in clear)",
            doc="comma-separated Fernet keys (`relay keys new`): the first encrypts stored payloads and errors, all "
            'decrypt (rotation: `relay keys rotate`; see "Personal data at rest")',
        ),
        Setting(
            "RELAY_LOOKUP_KEY",
            "lookup_key",
            LookupKey(),
            secret=True,
            shown_default="– (plain SHA-256)",
            heroku={"generator": "secret"},
            doc="at least 32 random characters (`relay keys new`): keys the digests of subscriber ids and emails "
            "stored beside each event (HMAC-SHA256), so the database alone cannot be searched for a person "
            '(see "Personal data at rest"); after changing it run `relay keys rotate --digests`',
        ),
        Setting(
            "RELAY_OPERATOR",
            "operator",
            Text(validate=ma.validate.Length(max=254, error="must be at most {max} characters")),
            shown_default="the OS user",
            # One person's name, set where they run `relay` (their shell, `heroku run -e`), not the app's.
            heroku=None,
            doc="who the audit log says ran a `relay` command that acts (replay, reveal, forget, unlink, purge, "
            'key rotation, `relay users`): your email or name, where you run `relay` (see "Audit log")',
        ),
    ),
)


class ConsoleKey(Parsed):
    """The console's session-signing key: long and not guessable (a word padded out, or a pattern
    repeated, has few different characters), because whoever knows it can sign a session cookie for any account."""

    def parse(self, text: str) -> str:
        if len(text) < MIN_LOOKUP_KEY_LENGTH:
            raise ValueError(
                f"must be at least {MIN_LOOKUP_KEY_LENGTH} characters of random text (make one with `relay keys new`)"
            )
        if len(set(text)) < MIN_CONSOLE_KEY_DISTINCT:
            raise ValueError(
                "is guessable (too few different characters): use random text (make one with `relay keys new`)"
            )
        return text


class WebhookSecret(Parsed):
    """A Standard Webhooks signing secret: `whsec_` (optional) and standard base64 of 24 to 64
    bytes. Decoded strictly: a URL-safe alphabet (a Fernet key's) would otherwise lose characters
    and sign with another key than the receiver's."""

    def parse(self, text: str) -> str:
        encoded = text.removeprefix(WEBHOOK_SECRET_PREFIX)
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        low, high = WEBHOOK_SECRET_BYTES
        if not low <= len(raw) <= high:
            raise ValueError(
                f"must be {WEBHOOK_SECRET_PREFIX} followed by the standard base64 of {low} to {high} random bytes "
                "(the Standard Webhooks form)"
            )
        return WEBHOOK_SECRET_PREFIX + encoded


def _alerts(reading: Reading) -> dict[str, Any]:
    values = dict(reading.values)
    if values["alert_webhook_url"] and not values["alert_webhook_secret"]:
        raise invalid("RELAY_ALERT_WEBHOOK_SECRET", "is required with RELAY_ALERT_WEBHOOK_URL (alerts are signed)")
    if values["alert_repeat_s"] < MIN_ALERT_REPEAT_S:
        raise invalid("RELAY_ALERT_REPEAT", "must be at least 1m")
    return values


ALERTS = SettingsGroup(
    "alerts",
    "Alerts",
    build=_alerts,
    settings=(
        Setting(
            "RELAY_ALERT_WEBHOOK_URL",
            "alert_webhook_url",
            Url(),
            secret=True,
            shown_default="– (no webhook alerts)",
            doc="where beat's alert check posts each alert as JSON, signed per the Standard Webhooks spec "
            '(`webhook-id`, `webhook-timestamp`, `webhook-signature` headers; see "Alerts")',
        ),
        Setting(
            "RELAY_ALERT_WEBHOOK_SECRET",
            "alert_webhook_secret",
            WebhookSecret(),
            secret=True,
            shown_default="– (required with `RELAY_ALERT_WEBHOOK_URL`)",
            doc="the alert webhook's signing secret: `whsec_` and the base64 of 24 to 64 random bytes "
            "(`python -c \"import base64, secrets; print('whsec_' + base64.b64encode(secrets.token_bytes(32))"
            '.decode())"`); the receiver verifies with it',
        ),
        Setting(
            "RELAY_ALERT_SLACK_URL",
            "alert_slack_url",
            Url(),
            secret=True,
            shown_default="– (no Slack alerts)",
            doc="a Slack incoming webhook's URL: each alert is one line there, with a link to the console "
            "(when `RELAY_PUBLIC_URL` is set)",
        ),
        Setting(
            "RELAY_ALERT_REPEAT",
            "alert_repeat_s",
            Duration(),
            default="1h",
            doc="an alert is sent when a condition starts, again at most this often while it lasts, and once "
            "when it ends",
        ),
        Setting(
            "RELAY_ALERT_BACKLOG_AGE",
            "alert_backlog_age_s",
            Duration(),
            default="15m",
            doc="a destination's oldest waiting live delivery older than this is an alert (replays and backfills "
            "are left out: they wait by design)",
        ),
    ),
)

CONSOLE = SettingsGroup(
    "console",
    "Console",
    build=lambda r: r.values,
    settings=(
        Setting(
            "RELAY_CONSOLE_SECRET_KEY",
            "console_secret_key",
            ConsoleKey(),
            secret=True,
            shown_default="– (console off)",
            doc="at least 32 random characters (`relay keys new`): turns the web console on at `/console/` and "
            'signs its sessions; changing it signs everyone out (see "Console")',
        ),
        Setting(
            "RELAY_CONSOLE_IDLE",
            "console_idle_s",
            Duration(),
            default="30m",
            doc="a console session ends after this long without a request",
        ),
    ),
)

# Read by gunicorn.conf.py and the Procfile, not by load_config: declared for the documentation.
PLATFORM: SettingsGroup[Any] = SettingsGroup(
    "platform",
    "Platform",
    build=None,
    settings=(
        Setting(
            "PORT",
            "port",
            Whole(),
            default="8000",
            heroku=None,  # the platform sets it
            doc="the web's port (`gunicorn.conf.py`; the platform sets it)",
        ),
        Setting(
            "WEB_CONCURRENCY",
            "web_concurrency",
            Whole(),
            default="2",
            heroku={"value": None},  # Heroku's Python buildpack sets it from the dyno size
            doc="gunicorn processes per web dyno or container (Heroku's Python buildpack sets it from the dyno size)",
        ),
        Setting(
            "WEB_THREADS",
            "web_threads",
            Whole(),
            default="1",
            heroku={"value": None},
            doc="threads per gunicorn process (above 1: gunicorn's gthread worker; measured slower here, see "
            "`gunicorn.conf.py`)",
        ),
        Setting(
            "WORKER_CONCURRENCY",
            "worker_concurrency",
            Whole(),
            default="4",
            doc="Celery processes per worker dyno or container (the Procfile's `--concurrency`)",
        ),
    ),
)

CORE_GROUPS: tuple[SettingsGroup[dict[str, Any]], ...] = (
    WEBHOOK,
    STORE,
    DELIVERY,
    SPARKLOOP,
    RETENTION,
    OBSERVABILITY,
    SECURITY,
    CONSOLE,
    ALERTS,
)


def terminal_format() -> str:
    """LOG_FORMAT's default: json when stderr is not a terminal (a PaaS, a container), text when it is."""
    return "text" if sys.stderr.isatty() else "json"
