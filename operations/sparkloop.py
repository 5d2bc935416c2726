"""SparkLoop's webhook registrations (`relay sparkloop webhooks list | register | remove`), through
its API v2 (https://docs.sparkloop.app/api-v2/endpoints/webhooks).

The API switches only four of the seven events Relay handles; registering switches those on, and
the other three must be switched on in SparkLoop's dashboard (dashboard_hint). Calls share
SPARKLOOP_RATE_LIMIT with every Relay process and follow workers.sparkloop.retry's policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from relay.runtime import Runtime
from workers.sparkloop.client import SparkLoopClient, sparkloop_client
from workers.sparkloop.retry import SparkLoopUnavailable, call_patiently
from workers.sparkloop.webhooks import (
    API_EVENTS,
    DASHBOARD_ONLY_EVENTS,
    DASHBOARD_URL,
    WEBHOOK_PATH,
    Webhook,
    find,
    https_problem,
    relay_webhook_url,
    same_url,
)

HIDDEN = "…"


class MissingApiKey(Exception):
    """SPARKLOOP_API_KEY is not set: bad input, found before any call."""

    def __init__(self):
        super().__init__("SPARKLOOP_API_KEY is not set: copy the API key from SparkLoop's Settings → Integrations page")


class BadTarget(ValueError):
    """The webhook URL to register cannot be: `setting` names where it came from ("--url" or
    "RELAY_PUBLIC_URL")."""

    def __init__(self, setting: str, problem: str):
        super().__init__(problem)
        self.setting = setting


def require_api_key(runtime: Runtime) -> None:
    if not runtime.config.sparkloop_api_key:
        raise MissingApiKey()


def api_client(runtime: Runtime) -> SparkLoopClient:
    """The process's SparkLoop client; MissingApiKey before any call when there is no key."""
    require_api_key(runtime)
    return sparkloop_client(runtime)


# --- list -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedWebhook:
    """A registration as an operator may see it: another integration's URL shows only its scheme
    and host (its path or query can carry that integration's secret) unless revealed."""

    uuid: str
    url: str
    events: dict[str, bool | None]
    relay: bool  # Relay's own (RELAY_PUBLIC_URL/webhooks/sparkloop)
    switched_on: tuple[str, ...]
    missing_api_events: tuple[str, ...]


def list_webhooks(runtime: Runtime, reveal: bool = False) -> list[ListedWebhook]:
    """SparkLoop's webhooks, newest first."""
    client = api_client(runtime)
    relay_url = _relay_url(runtime)
    webhooks = call_patiently(client, lambda c: c.list_webhooks(), repeatable=True)
    return [_listed(webhook, relay_url, reveal) for webhook in webhooks]


def relay_url_known(runtime: Runtime) -> bool:
    return _relay_url(runtime) is not None


def _relay_url(runtime: Runtime) -> str | None:
    public_url = runtime.config.public_url
    return relay_webhook_url(public_url) if public_url else None


def _listed(webhook: Webhook, relay_url: str | None, reveal: bool) -> ListedWebhook:
    return ListedWebhook(
        uuid=webhook.uuid,
        url=shown_url(webhook.url, relay_url, reveal),
        events=webhook.events,
        relay=bool(relay_url and same_url(webhook.url, relay_url)),
        switched_on=webhook.switched_on,
        missing_api_events=webhook.missing_api_events,
    )


def shown_url(url: str, relay_url: str | None, reveal: bool) -> str:
    """Only the scheme and host of another integration's webhook URL, unless it is Relay's own
    or `reveal`."""
    if reveal or (relay_url and same_url(url, relay_url)):
        return url
    parts = urlsplit(url)
    if not parts.hostname:
        return HIDDEN
    return f"{parts.scheme}://{parts.hostname}/{HIDDEN}" if (parts.path.strip("/") or parts.query) else url


def dashboard_hint() -> str:
    return (
        f"Switch on in SparkLoop's dashboard ({DASHBOARD_URL}, the webhook's events), which the API "
        f"cannot: {', '.join(DASHBOARD_ONLY_EVENTS)}"
    )


# --- register ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    webhook: Webhook
    target: str
    created: bool
    switched_on: tuple[str, ...]  # the events this call switched on ((): nothing changed)

    @property
    def still_off(self) -> tuple[str, ...]:
        """The API's events SparkLoop still reports off after it answered."""
        return self.webhook.missing_api_events


def register_target(runtime: Runtime, url: str | None) -> str:
    """The webhook URL to register: from `url` (a base URL, as RELAY_PUBLIC_URL, or the webhook
    URL itself), else RELAY_PUBLIC_URL's. BadTarget before any call."""
    if url is not None:
        return _given_target(url.strip())
    public_url = runtime.config.public_url
    if not public_url:
        raise BadTarget(
            "RELAY_PUBLIC_URL", "RELAY_PUBLIC_URL is not set: set it to this Relay's public base URL, or pass --url"
        )
    if problem := https_problem(public_url):
        raise BadTarget(
            "RELAY_PUBLIC_URL",
            f"RELAY_PUBLIC_URL is not https:// ({problem}): set the https URL SparkLoop reaches, or pass --url",
        )
    return relay_webhook_url(public_url)


def _given_target(url: str) -> str:
    """Any other path than Relay's webhook path would register a URL Relay does not answer."""
    if problem := https_problem(url):
        raise BadTarget("--url", problem)
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise BadTarget(
            "--url", "give the URL without credentials, query string or fragment: SparkLoop sends its token in a header"
        )
    path = parts.path.rstrip("/")
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    if path == "":
        return relay_webhook_url(base)
    if path == WEBHOOK_PATH:
        return base + WEBHOOK_PATH
    raise BadTarget(
        "--url",
        f"its path {parts.path} is not Relay's webhook path {WEBHOOK_PATH}: give the base URL "
        f"({base}, as RELAY_PUBLIC_URL) or {relay_webhook_url(base)}",
    )


def register_webhook(runtime: Runtime, target: str) -> Registration:
    """Register `target` with the four events the API can switch on; a webhook already registered
    for it gets the missing ones switched on instead of a second registration."""
    client = api_client(runtime)
    existing = find(call_patiently(client, lambda c: c.list_webhooks(), repeatable=True), target)
    if existing is None:
        created = call_patiently(client, lambda c: c.create_webhook(target, API_EVENTS), repeatable=False)
        return Registration(created, target, created=True, switched_on=created.switched_on)
    missing = existing.missing_api_events
    if not missing:
        return Registration(existing, target, created=False, switched_on=())
    webhook = call_patiently(client, lambda c: c.switch_on(existing.uuid, missing), repeatable=False)
    return Registration(webhook, target, created=False, switched_on=missing)


# --- remove -----------------------------------------------------------------------------------


def find_webhook(runtime: Runtime, webhook_id: str) -> ListedWebhook | None:
    """The webhook `webhook_id` (as `list_webhooks` shows it), or None."""
    wanted = webhook_id.strip()
    return next((w for w in list_webhooks(runtime) if w.uuid == wanted), None)


def remove_webhook(runtime: Runtime, webhook_id: str) -> None:
    """SparkLoop stops sending to it; SparkLoopUnavailable when it was gone already."""
    client = api_client(runtime)
    if not call_patiently(client, lambda c: c.delete_webhook(webhook_id), repeatable=False):
        raise SparkLoopUnavailable(f"{webhook_id} was gone by the time it was removed")
