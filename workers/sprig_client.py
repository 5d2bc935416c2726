"""Sprig's user API (sprig.md §5, §6): upsert a user, read one back."""
from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from workers.http_client import VendorClient, VendorHTTP

if TYPE_CHECKING:
    from workers.coordination import Guard

USERS = "/v2/users"
USER = "/v2/users/{userId}"


class SprigClient(VendorClient):
    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None, guard: Guard | None = None):
        # /v2/users* is documented with the API-Key scheme (§3); purge and /v1 would use Bearer.
        self._http = VendorHTTP("sprig", base_url, f"API-Key {api_key}", timeout, transport, api_key,
                                 guard)


    def upsert_user(self, body: dict) -> None:
        """POST /v2/users. Sprig answers 202 and processes it later, so a read can still 404."""
        self._http.request("POST", USERS, json=body)

    def get_user(self, user_id: str) -> dict | None:
        """GET /v2/users/{userId}: the visitor, or None when Sprig does not know it (yet)."""
        response = self._http.request("GET", USER, path_params={"userId": user_id}, ok_statuses=(404,))
        if response.status_code == 404:
            return None
        return self._http.json("GET", USER, response)
