"""SparkLoop's API v2: the subscriber list `relay backfill` reads, and the webhook registrations
`relay sparkloop webhooks` and `relay doctor` manage and check.
https://docs.sparkloop.app/api-v2/endpoints/subscribers, https://docs.sparkloop.app/api-v2/endpoints/webhooks"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from schemas.values import integer
from workers.guard import Guard
from workers.outcomes import ErrorKind
from workers.sparkloop.webhooks import API_EVENTS, Webhook
from workers.vendor_errors import VendorError
from workers.vendor_http import VendorClient, VendorHTTP, shared_client

SUBSCRIBERS = "/subscribers"
WEBHOOKS = "/webhooks"
WEBHOOK = "/webhooks/{identifier}"
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class SubscriberPage:
    subscribers: list[dict]
    page: int
    total_pages: int | None  # None when the answer did not say
    total_subscribers: int | None


class SparkLoopClient(VendorClient):
    vendor = "sparkloop"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        guard: Guard | None = None,
    ):
        self._http = VendorHTTP(
            self.vendor, base_url, api_key, timeout, transport, api_key, guard, auth_header="X-Api-Key"
        )

    def list_subscribers(self, page: int = 1, per_page: int = MAX_PER_PAGE) -> SubscriberPage:
        """GET /subscribers: one page, newest `created_at` first."""
        response = self._request("GET", SUBSCRIBERS, params={"page": page, "per_page": per_page})
        body = self._http.json("GET", SUBSCRIBERS, response)
        rows = body.get("subscribers") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise self._unexpected("GET", SUBSCRIBERS, response, "answer has no subscribers list")
        # The documented answer nests the counts in `meta`; a secondary source has them at the top.
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else body
        return SubscriberPage(
            subscribers=[row for row in rows if isinstance(row, dict)],
            page=integer(meta.get("page")) or page,
            total_pages=integer(meta.get("total_pages")),
            total_subscribers=integer(meta.get("total_subscribers")),
        )

    def list_webhooks(self) -> list[Webhook]:
        """GET /webhooks: every registration, newest first."""
        response = self._request("GET", WEBHOOKS)
        body = self._http.json("GET", WEBHOOKS, response)
        rows = body.get("webhooks") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise self._unexpected("GET", WEBHOOKS, response, "answer has no webhooks list")
        return [webhook for webhook in map(Webhook.parse, rows) if webhook is not None]

    def create_webhook(self, url: str, events: tuple[str, ...] = API_EVENTS) -> Webhook:
        """POST /webhooks with `events` switched on. Not idempotent: a retry after a lost answer
        can register the URL twice."""
        response = self._request("POST", WEBHOOKS, json={"url": url, **dict.fromkeys(events, True)})
        return self._webhook("POST", WEBHOOKS, response)

    def switch_on(self, uuid: str, events: tuple[str, ...] = API_EVENTS) -> Webhook:
        """PUT /webhooks/{identifier}: switch `events` on, leaving the others as they are."""
        response = self._request("PUT", WEBHOOK, path_params={"identifier": uuid}, json=dict.fromkeys(events, True))
        return self._webhook("PUT", WEBHOOK, response)

    def delete_webhook(self, uuid: str) -> bool:
        """DELETE /webhooks/{identifier}: False when SparkLoop holds no such webhook (404)."""
        response = self._request("DELETE", WEBHOOK, path_params={"identifier": uuid}, ok_statuses=(404,))
        return response.status_code != 404

    def _webhook(self, method: str, path: str, response) -> Webhook:
        body = self._http.json(method, path, response)
        webhook = Webhook.parse(body.get("webhook") if isinstance(body, dict) else None)
        if webhook is None:
            raise self._unexpected(method, path, response, "answer has no webhook")
        return webhook

    def _unexpected(self, method: str, path: str, response, what: str) -> VendorError:
        return VendorError(
            "sparkloop", ErrorKind.PERMANENT, what, status=response.status_code, method=method, path=path
        )


def sparkloop_client(runtime) -> SparkLoopClient:
    config = runtime.config
    return shared_client(
        SparkLoopClient, runtime, config.sparkloop_api_url, config.sparkloop_api_key, config.sparkloop_rate_limit
    )
