"""Sprig's user API: upsert a user, read one back, purge visitors (erasure requests).
https://docs.sprig.com/reference/sprig-api/v2/post-user-v2-1,
https://docs.sprig.com/reference/sprig-api/v2/get-v2-users-userid-1,
https://docs.sprig.com/reference/sprig-api/v2/post-v2-purge-visitors-1"""

from __future__ import annotations

import httpx

from workers.guard import Guard
from workers.sprig.settings import sprig_settings
from workers.vendor_http import VendorClient, VendorHTTP, shared_client

USERS = "/v2/users"
USER = "/v2/users/{userId}"
PURGE = "/v2/purge/visitors"
# Sprig takes at most 100 visitors per purge request.
MAX_PURGED_PER_REQUEST = 100


class SprigClient(VendorClient):
    vendor = "sprig"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        guard: Guard | None = None,
    ):
        # /v2/users* is documented with the API-Key scheme (https://docs.sprig.com/docs/apis);
        # purge and /v1 would use Bearer.
        self._http = VendorHTTP(
            self.vendor, base_url, f"API-Key {api_key}", timeout, transport, api_key, guard, hooks=self
        )
        self._bearer = f"Bearer {api_key}"

    def missing_message(self, status: int) -> str | None:
        # Sprig answers 403, not 401, to a key it does not know.
        return "Sprig rejected the API key (403)" if status == 403 else super().missing_message(status)

    def upsert_user(self, body: dict) -> None:
        """POST /v2/users. Sprig answers 202 and processes it later, so a read can still 404."""
        self._request("POST", USERS, json=body)

    def get_user(self, user_id: str) -> dict | None:
        """GET /v2/users/{userId}: the visitor, or None when Sprig does not know it (yet)."""
        response = self._request("GET", USER, path_params={"userId": user_id}, ok_statuses=(404,))
        if response.status_code == 404:
            return None
        return self._http.json("GET", USER, response)

    def purge_visitors(self, user_ids=(), emails=()) -> list[str]:
        """POST /v2/purge/visitors, documented with Bearer auth (not API-Key), in requests of at
        most 100 ids: Sprig deletes these visitors and their data after its delay (10 days by
        default). Returns Sprig's request id of each request."""
        ids = [("userIds", value) for value in dict.fromkeys(user_ids)] + [
            ("emails", value) for value in dict.fromkeys(emails)
        ]
        request_ids = []
        for start in range(0, len(ids), MAX_PURGED_PER_REQUEST):
            body: dict[str, list[str]] = {}
            for field, value in ids[start : start + MAX_PURGED_PER_REQUEST]:
                body.setdefault(field, []).append(value)
            response = self._request("POST", PURGE, json=body, headers={"Authorization": self._bearer})
            answer = self._http.json("POST", PURGE, response)
            request_ids.append(str(answer.get("requestId") or "") if isinstance(answer, dict) else "")
        return request_ids


def sprig_client(runtime) -> SprigClient:
    sprig = sprig_settings(runtime.config)
    return shared_client(SprigClient, runtime, sprig.api_url, sprig.api_key, sprig.rate_limit)
