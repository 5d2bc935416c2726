"""Ledger's API, with its own ways: errors as {"problem": {"code", "detail"}}, its limits in
x-ledger-limit and x-ledger-remaining, its request id in x-ledger-request."""

from __future__ import annotations

import httpx

from testbed.third_destination import SETTINGS
from workers.guard import Guard
from workers.vendor_errors import retry_after_seconds
from workers.vendor_http import RateLimitHeaders, VendorClient, VendorHTTP, shared_client

RECORDS = "/records"


class LedgerClient(VendorClient):
    vendor = "ledger"
    request_id_header = "x-ledger-request"

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        guard: Guard | None = None,
    ):
        self._http = VendorHTTP(self.vendor, base_url, f"Token {token}", timeout, transport, token, guard, hooks=self)

    def error_body(self, body: object) -> tuple[str | None, str | None]:
        problem = body.get("problem") if isinstance(body, dict) else None
        if not isinstance(problem, dict):
            return None, None
        return problem.get("code"), problem.get("detail")

    def rate_limits(self, headers: httpx.Headers) -> RateLimitHeaders:
        def number(name: str) -> int | None:
            value = headers.get(name)
            return int(value) if value and value.isdigit() else None

        return RateLimitHeaders(
            limit=number("x-ledger-limit"),
            remaining=number("x-ledger-remaining"),
            reset_after=retry_after_seconds(headers),
        )

    def record(self, body: dict, key: str) -> dict:
        """The record's id and its account's (one Ledger opened when the body names none)."""
        response = self._request("POST", RECORDS, json=body, headers={"Idempotency-Key": key})
        return self._http.json("POST", RECORDS, response)

    def erase(self, emails: list[str]) -> str:
        """Ledger deletes every record of these emails; its request id."""
        response = self._request("POST", "/erasures", json={"emails": emails})
        return str(self._http.json("POST", "/erasures", response)["request"])

    def whoami(self) -> dict:
        response = self._request("GET", "/whoami")
        return self._http.json("GET", "/whoami", response)


def ledger_client(runtime) -> LedgerClient:
    own = runtime.config.of(SETTINGS)
    return shared_client(LedgerClient, runtime, own.url, own.token, own.rate)
