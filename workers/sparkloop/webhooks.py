"""SparkLoop webhook registrations as Relay sees them: which events the API can switch, which only
SparkLoop's dashboard can, and whether a webhook sends Relay what it handles.
https://docs.sparkloop.app/api-v2/endpoints/webhooks, https://docs.sparkloop.app/webhooks"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from schemas.events import EVENTS

WEBHOOK_PATH = "/webhooks/sparkloop"
# The only flags API v2 has; the other events Relay handles are switched in the dashboard
# (Settings → Integrations → Webhooks, https://dash.sparkloop.app/settings/integrations).
API_EVENTS = ("new_referral", "reward_unlocked", "new_partner_referral", "reward_redeemed")
DASHBOARD_ONLY_EVENTS = tuple(name for name in EVENTS if name not in API_EVENTS)
DASHBOARD_URL = "https://dash.sparkloop.app/settings/integrations"


@dataclass(frozen=True)
class Webhook:
    uuid: str
    url: str
    # Each API flag: True, False, or None when never set (SparkLoop may also leave keys out).
    events: dict[str, bool | None]

    @classmethod
    def parse(cls, body: object) -> Webhook | None:
        if not isinstance(body, dict) or not isinstance(body.get("uuid"), str) or not isinstance(body.get("url"), str):
            return None
        events = body["events"] if isinstance(body.get("events"), dict) else {}
        return cls(
            body["uuid"],
            body["url"],
            {name: value for name, value in events.items() if isinstance(value, bool) or value is None},
        )

    @property
    def switched_on(self) -> tuple[str, ...]:
        return tuple(name for name, value in self.events.items() if value is True)

    @property
    def missing_api_events(self) -> tuple[str, ...]:
        """The API-switchable events Relay handles that this webhook does not send."""
        return tuple(name for name in API_EVENTS if self.events.get(name) is not True)


def relay_webhook_url(public_url: str) -> str:
    return public_url.rstrip("/") + WEBHOOK_PATH


def same_url(a: str, b: str) -> bool:
    """The same endpoint: scheme and host in any case, a trailing slash or not."""
    first, second = urlsplit(a.strip()), urlsplit(b.strip())
    return (first.scheme.lower(), first.netloc.lower(), first.path.rstrip("/"), first.query) == (
        second.scheme.lower(),
        second.netloc.lower(),
        second.path.rstrip("/"),
        second.query,
    )


def find(webhooks: list[Webhook], url: str) -> Webhook | None:
    """The webhook for `url` that sends the most of Relay's events (SparkLoop may hold several)."""
    matching = [webhook for webhook in webhooks if same_url(webhook.url, url)]
    return min(matching, key=lambda webhook: len(webhook.missing_api_events), default=None)


def https_problem(url: str) -> str | None:
    """Why SparkLoop would refuse `url` ("Url must start with https://"), or None."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return "SparkLoop accepts only https:// URLs naming a host"
    return None
