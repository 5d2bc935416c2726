"""The HTTP layer every vendor client shares: one pooled httpx.Client per account, timeouts,
the User-Agent, the guard (breaker and shared throttle) around each call, rate-limit headers,
and turning every failure into a VendorError.

Paths are passed as templates plus parameters, so logs and errors only ever see the template
(`/v2/users/{userId}`), never the email it was filled with."""

from __future__ import annotations

import copy
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any, TypeVar
from urllib.parse import quote

import certifi
import httpx

from relay.runtime import Runtime
from workers.guard import Guard, guard_for
from workers.outcomes import ErrorKind
from workers.reserves import Reserves
from workers.throttle import Pacing
from workers.vendor_errors import (
    ErrorHooks,
    Redactor,
    VendorError,
    error_from_exception,
    error_from_response,
    retry_after_seconds,
    strings_in,
)

CONNECT_TIMEOUT_S = 5.0


def _user_agent() -> str:
    try:
        return f"relay/{metadata.version('relay')}"
    except metadata.PackageNotFoundError:
        return "relay/unknown"


USER_AGENT = _user_agent()


@dataclass(frozen=True)
class RateLimitHeaders:
    """What the latest response said about the vendor's limits; None where it sent nothing."""

    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    daily_limit: int | None = None
    daily_remaining: int | None = None

    @classmethod
    def from_headers(cls, headers: httpx.Headers, prefix: str = "", daily: bool = False) -> RateLimitHeaders:
        """The `<prefix>ratelimit-limit` and `-remaining` headers (the IETF draft's without a
        prefix), and `-daily-limit` and `-daily-remaining` when the vendor sends a daily budget;
        the wait from Retry-After or `ratelimit-reset`."""
        return cls(
            limit=_int(headers.get(f"{prefix}ratelimit-limit")),
            remaining=_int(headers.get(f"{prefix}ratelimit-remaining")),
            reset_after=retry_after_seconds(headers),
            daily_limit=_int(headers.get(f"{prefix}ratelimit-daily-limit")) if daily else None,
            daily_remaining=_int(headers.get(f"{prefix}ratelimit-daily-remaining")) if daily else None,
        )


class VendorHooks(ErrorHooks):
    """Where vendors differ, for the shared layer: their error answers (ErrorHooks) and the
    headers that say their limits. A client class overrides what its vendor does otherwise."""

    def rate_limits(self, headers: httpx.Headers) -> RateLimitHeaders:
        return RateLimitHeaders.from_headers(headers)


class VendorHTTP:
    def __init__(
        self,
        vendor: str,
        base_url: str,
        authorization: str,
        timeout: float,
        transport: httpx.BaseTransport | None,
        secret: str,
        guard: Guard | None = None,
        auth_header: str = "Authorization",
        hooks: VendorHooks | None = None,
    ):
        self.vendor = vendor
        self.hooks = hooks or VendorHooks(vendor)
        self.guard = guard
        self.metrics = guard.metrics if guard else None
        self.timeout = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_S, timeout))
        self.last_rate_limit: RateLimitHeaders | None = None
        self._secrets = (secret, authorization)
        self._log = logging.getLogger(f"relay.vendor.{vendor}")
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={auth_header: authorization, "User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=self.timeout,
            transport=transport,
            verify=tls_context(),
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        pacing: Pacing,
        personal: frozenset[str] = frozenset(),
        path_params: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one request; return the response if it is 2xx or in `ok_statuses`, else raise
        VendorError. `path` is a template filled from `path_params`, each fully URL-encoded;
        `personal` are values the vendor's error text must not carry (what the body holds is
        removed too)."""
        url = path.format(**{k: quote(str(v), safe="") for k, v in (path_params or {}).items()})
        grant = self.guard.before(pacing) if self.guard else None
        started = time.monotonic()
        try:
            response = self._client.request(method, url, params=params, json=json, headers=headers)
        except httpx.RequestError as exc:
            self._measure(started, "error")
            unreached = error_from_exception(self.vendor, method, path, exc, self.timeout)
            self._log.debug("%s %s failed: %s", method, path, unreached.message)
            if self.guard:
                self.guard.after(unreached.kind, grant=grant)
            raise unreached from None
        self._measure(started, str(response.status_code))
        rate = self.last_rate_limit = self.hooks.rate_limits(response.headers)
        self._log.debug(
            "%s %s -> %s [req %s]", method, path, response.status_code, self.hooks.request_id(response.headers) or "-"
        )
        ok = response.is_success or response.status_code in ok_statuses
        err = (
            None
            if ok
            else error_from_response(
                self.vendor,
                method,
                path,
                response,
                Redactor((*self._secrets, *personal, *strings_in(json))),
                self.hooks,
            )
        )
        if self.guard:
            self.guard.after(
                err.kind if err else None,
                rate.remaining,
                rate.daily_remaining,
                err.retry_after if err else None,
                grant=grant,
                limit=rate.limit,
                daily_limit=rate.daily_limit,
            )
        if err:
            raise err
        return response

    def _measure(self, started: float, status: str) -> None:
        if self.metrics is not None:
            self.metrics.count("relay_vendor_requests_total", vendor=self.vendor, status=status)
            elapsed = time.monotonic() - started
            self.metrics.observe("relay_vendor_request_duration_seconds", elapsed, vendor=self.vendor)

    def json(self, method: str, path: str, response: httpx.Response) -> Any:
        """The JSON body of a success response. A 2xx that is not JSON (a proxy's HTML page)
        is transient: retrying is safe because writes carry idempotency keys or are upserts."""
        try:
            return response.json()
        except ValueError:
            raise VendorError(
                self.vendor,
                ErrorKind.TRANSIENT,
                "success response is not JSON",
                status=response.status_code,
                method=method,
                path=path,
                request_id=self.hooks.request_id(response.headers),
            ) from None

    def close(self) -> None:
        self._client.close()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class VendorClient(VendorHooks):
    """What every vendor client shares around its VendorHTTP (which it hands itself as the
    vendor's hooks). A client is made once per
    process and account (connections are reused); `for_run` gives a view of it for one
    delivery run, whose calls use that run's throttle lane and reserved slot."""

    vendor: str
    _http: VendorHTTP
    _pacing: Pacing | None = None
    _personal: frozenset[str] = frozenset()
    _before_call: Callable[[], None] | None = None

    def for_run(self, pacing: Pacing, personal=(), before_call: Callable[[], None] | None = None):
        """This client for one run: its calls use `pacing`, no error text they produce carries
        any of `personal` (the payload's personal values), and `before_call` runs before each
        (the run's saves are written before its next call goes out: workers.context)."""
        view = copy.copy(self)
        view._pacing, view._personal, view._before_call = pacing, frozenset(personal), before_call
        return view

    # This view's latest answer: its status and the vendor's request id.
    last_status: int | None = None
    last_request_id: str | None = None

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        if self._before_call is not None:
            self._before_call()
        response = self._http.request(method, path, pacing=self._pacing or Pacing(), personal=self._personal, **kwargs)
        self.last_status, self.last_request_id = response.status_code, self.request_id(response.headers)
        return response

    @property
    def last_rate_limit(self) -> RateLimitHeaders | None:
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


@cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's roots), built once per process: loading the roots
    is most of what a new httpx.Client costs (about 60 ms here)."""
    return ssl.create_default_context(cafile=certifi.where())


ClientT = TypeVar("ClientT", bound="VendorClient")


def shared_client(cls: type[ClientT], runtime: Runtime, base_url: str, credential: str | None, rate) -> ClientT:
    """The runtime's one client of `cls` for this account, guarded by the account's shared
    throttle and breaker."""
    config = runtime.config

    # Every VendorClient class takes these; VendorClient itself declares no constructor.
    make: Any = cls

    def build() -> ClientT:
        shares = config.reserves(cls.vendor)
        reserves = Reserves(shares.catch_up, shares.retry, shares.live, config.park_probe_s)
        guard = guard_for(
            cls.vendor, credential or "", runtime.redis, runtime.metrics, rate, config.breaker_cooldown_s, reserves
        )
        return make(base_url, credential or "", timeout=config.vendor_timeout_s, guard=guard)

    return runtime.shared((cls, base_url, credential or "", rate), build)
