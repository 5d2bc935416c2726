"""SparkLoop's API v2 subscriber list (sparkloop.md §6), read by `relay backfill`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from workers.http_client import VendorClient, VendorHTTP
from workers.vendor_errors import PERMANENT, VendorError

if TYPE_CHECKING:
    from workers.coordination import Guard

SUBSCRIBERS = "/subscribers"
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class SubscriberPage:
    subscribers: list[dict]
    page: int
    total_pages: int | None  # None when the answer did not say
    total_subscribers: int | None


class SparkLoopClient(VendorClient):
    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None, guard: Guard | None = None):
        self._http = VendorHTTP("sparkloop", base_url, api_key, timeout, transport, api_key, guard,
                                auth_header="X-Api-Key")

    def list_subscribers(self, page: int = 1, per_page: int = MAX_PER_PAGE) -> SubscriberPage:
        """GET /subscribers: one page, newest `created_at` first (§6.3, §6.5)."""
        response = self._http.request("GET", SUBSCRIBERS, params={"page": page, "per_page": per_page})
        body = self._http.json("GET", SUBSCRIBERS, response)
        rows = body.get("subscribers") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise VendorError("sparkloop", PERMANENT, "answer has no subscribers list",
                              status=response.status_code, method="GET", path=SUBSCRIBERS)
        # The documented answer nests the counts in `meta`; a secondary source has them at the top.
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else body
        return SubscriberPage(
            subscribers=[row for row in rows if isinstance(row, dict)],
            page=_int(meta.get("page")) or page,
            total_pages=_int(meta.get("total_pages")),
            total_subscribers=_int(meta.get("total_subscribers")),
        )


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
