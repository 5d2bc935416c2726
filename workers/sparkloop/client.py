"""SparkLoop's API v2 subscriber list, read by `relay backfill`.
https://docs.sparkloop.app/api-v2/endpoints/subscribers"""
from __future__ import annotations

from dataclasses import dataclass

import httpx

from schemas.values import integer
from workers.guard import Guard
from workers.outcomes import ErrorKind
from workers.vendor_errors import VendorError
from workers.vendor_http import VendorClient, VendorHTTP, shared_client

SUBSCRIBERS = "/subscribers"
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class SubscriberPage:
    subscribers: list[dict]
    page: int
    total_pages: int | None  # None when the answer did not say
    total_subscribers: int | None


class SparkLoopClient(VendorClient):
    vendor = "sparkloop"

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None, guard: Guard | None = None):
        self._http = VendorHTTP(self.vendor, base_url, api_key, timeout, transport, api_key, guard,
                                auth_header="X-Api-Key")

    def list_subscribers(self, page: int = 1, per_page: int = MAX_PER_PAGE) -> SubscriberPage:
        """GET /subscribers: one page, newest `created_at` first."""
        response = self._request("GET", SUBSCRIBERS, params={"page": page, "per_page": per_page})
        body = self._http.json("GET", SUBSCRIBERS, response)
        rows = body.get("subscribers") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise VendorError("sparkloop", ErrorKind.PERMANENT, "answer has no subscribers list",
                              status=response.status_code, method="GET", path=SUBSCRIBERS)
        # The documented answer nests the counts in `meta`; a secondary source has them at the top.
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else body
        return SubscriberPage(
            subscribers=[row for row in rows if isinstance(row, dict)],
            page=integer(meta.get("page")) or page,
            total_pages=integer(meta.get("total_pages")),
            total_subscribers=integer(meta.get("total_subscribers")),
        )



def sparkloop_client(config) -> SparkLoopClient:
    return shared_client(SparkLoopClient, config, config.sparkloop_api_url, config.sparkloop_api_key, config.sparkloop_rate_limit)
