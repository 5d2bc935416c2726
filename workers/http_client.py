"""The HTTP plumbing both vendor clients share: one pooled httpx.Client, timeouts, the
User-Agent, rate-limit bookkeeping, and turning every failure into a VendorError.

Paths are passed as templates plus parameters, so logs and errors only ever see the template
(`/v2/users/{userId}`), never the email it was filled with."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from workers.vendor_errors import VendorError, error_from_exception, error_from_response, retry_after_seconds

if TYPE_CHECKING:
    from workers.coordination import Guard

CONNECT_TIMEOUT_S = 5.0


def _user_agent() -> str:
    try:
        return f"relay/{metadata.version('relay')}"
    except metadata.PackageNotFoundError:
        return "relay/unknown"


USER_AGENT = _user_agent()


@dataclass(frozen=True)
class RateLimit:
    """The rate-limit headers of the latest response; None where the vendor sent none."""
    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    daily_limit: int | None = None
    daily_remaining: int | None = None

    @classmethod
    def from_headers(cls, headers: httpx.Headers) -> RateLimit:
        return cls(
            limit=_int(headers.get("s-ratelimit-limit") or headers.get("ratelimit-limit")),
            remaining=_int(headers.get("s-ratelimit-remaining") or headers.get("ratelimit-remaining")),
            reset_after=retry_after_seconds(headers),
            daily_limit=_int(headers.get("s-ratelimit-daily-limit")),
            daily_remaining=_int(headers.get("s-ratelimit-daily-remaining")),
        )


class VendorHTTP:
    def __init__(self, vendor: str, base_url: str, authorization: str, timeout: float,
                 transport: httpx.BaseTransport | None, secret: str, guard: Guard | None = None,
                 auth_header: str = "Authorization"):
        self.vendor = vendor
        self.guard = guard
        self.timeout = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_S, timeout))
        self.last_rate_limit: RateLimit | None = None
        self._secrets = (secret, authorization)
        self._log = logging.getLogger(f"relay.vendor.{vendor}")
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={auth_header: authorization, "User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=self.timeout,
            transport=transport,
        )

    def request(self, method: str, path: str, *, path_params: dict[str, str] | None = None,
                params: dict[str, Any] | None = None, json: Any = None,
                headers: dict[str, str] | None = None, ok_statuses: tuple[int, ...] = ()) -> httpx.Response:
        """Send one request; return the response if it is 2xx or in `ok_statuses`, else raise
        VendorError. `path` is a template filled from `path_params`, each fully URL-encoded."""
        url = path.format(**{k: quote(str(v), safe="") for k, v in (path_params or {}).items()})
        if self.guard:
            self.guard.before()  # may raise Deferred: breaker open or no slot free yet
        try:
            response = self._client.request(method, url, params=params, json=json, headers=headers)
        except httpx.RequestError as exc:
            err = error_from_exception(self.vendor, method, path, exc, self.timeout)
            self._log.debug("%s %s failed: %s", method, path, err.message)
            if self.guard:
                self.guard.after(err.kind, None)
            raise err from None
        self.last_rate_limit = RateLimit.from_headers(response.headers)
        self._log.debug("%s %s -> %s [req %s]", method, path, response.status_code,
                        response.headers.get("s-request-id", "-"))
        if response.is_success or response.status_code in ok_statuses:
            if self.guard:
                self.guard.after("ok", self.last_rate_limit)
            return response
        err = error_from_response(self.vendor, method, path, response, self._secrets)
        if self.guard:
            self.guard.after(err.kind, self.last_rate_limit, err.retry_after)
        raise err

    def json(self, method: str, path: str, response: httpx.Response) -> Any:
        """The JSON body of a success response. A 2xx that is not JSON (a proxy's HTML page)
        is transient: retrying is safe because writes carry idempotency keys or are upserts."""
        try:
            return response.json()
        except ValueError:
            raise VendorError(self.vendor, "transient", "success response is not JSON",
                              status=response.status_code, method=method, path=path,
                              request_id=response.headers.get("s-request-id")) from None

    def close(self) -> None:
        self._client.close()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class VendorClient:
    """What both vendor clients share around their VendorHTTP: rate-limit info and closing."""

    _http: VendorHTTP

    @property
    def last_rate_limit(self) -> RateLimit | None:
        return self._http.last_rate_limit

    @property
    def guard(self) -> Guard | None:
        return self._http.guard

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
