"""The one error type the vendor clients raise, and the one place that classifies HTTP statuses
into an `ErrorKind` (workers.outcomes).

`str(err)` goes into logs and the delivery table, so it carries the method, the path template,
the status and the vendor's message, and never bodies, query strings, credentials or emails.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import httpx

from schemas.personal import leaves, without_contact_details
from workers.outcomes import ErrorKind

MAX_MESSAGE_CHARS = 200
# Shorter known values ("US", "2") would redact ordinary words; they identify no one.
MIN_KNOWN_CHARS = 3


class VendorError(Exception):
    def __init__(
        self,
        vendor: str,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        path: str = "",
        error_type: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ):
        super().__init__(message)
        self.vendor, self.kind, self.message, self.status = vendor, ErrorKind(kind), message, status
        self.method, self.path, self.error_type = method, path, error_type
        self.retry_after, self.request_id = retry_after, request_id

    def __str__(self) -> str:
        return f"{self.vendor} {self.call_text()}"

    def call_text(self) -> str:
        """The call and its outcome without the vendor's name, for where the vendor is named
        already (a delivery's destination)."""
        outcome = str(self.status) if self.status is not None else "network error"
        if self.error_type:
            outcome += f" {self.error_type}"
        text = f"{self.method} {self.path} -> {outcome}: {self.message}"
        if self.request_id:
            text += f" [req {self.request_id}]"
        return text

    def __repr__(self) -> str:
        return f"VendorError({self.kind}: {self})"


def classify_status(status: int, headers: Mapping[str, str] | None = None) -> ErrorKind | None:
    """What an HTTP status means: None for 2xx, else an ErrorKind other than DUPLICATE, which
    only a vendor's error body can say (its client's `error_kind` hook)."""
    headers = headers or {}
    if 200 <= status < 300:
        return None
    if status == 429:
        return ErrorKind.THROTTLED
    if status == 503 and retry_after_seconds(headers) is not None:
        return ErrorKind.THROTTLED
    if status in (401, 403):
        return ErrorKind.AUTH
    if status in (408, 409, 425) or status >= 500:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT  # other 4xx, and 1xx/3xx: a redirect means a misconfigured base URL


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date), else `ratelimit-reset`
    (delta seconds, as Sprig's SDK reads it; values that look like an epoch time are converted)."""
    value = _header(headers, "retry-after")
    if value is not None:
        seconds = _seconds(value)
        if seconds is None:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
        if seconds is not None:
            return max(seconds, 0.0)
    value = _header(headers, "ratelimit-reset")
    seconds = _seconds(value) if value is not None else None
    if seconds is None:
        return None
    if seconds > 1_000_000_000:
        seconds -= time.time()
    return max(seconds, 0.0)


def error_from_response(
    vendor: str,
    method: str,
    path: str,
    response: httpx.Response,
    redact: Redactor | None = None,
    hooks: ErrorHooks | None = None,
) -> VendorError:
    """The VendorError for a non-2xx response, with the vendor's message from its error body as
    its client's hooks read it."""
    status, headers = response.status_code, response.headers
    redact = redact or Redactor()
    hooks = hooks or ErrorHooks(vendor)
    try:
        body = response.json()
    except ValueError:  # empty, non-JSON, or undecodable
        body = None
    error_type, message = hooks.error_body(body)
    kind = classify_status(status, headers) or ErrorKind.PERMANENT  # (only non-2xx answers get here)
    kind = hooks.error_kind(status, error_type, message, kind)
    if not message:
        message = hooks.missing_message(status) or response.reason_phrase or f"HTTP {status}"
    return VendorError(
        vendor,
        kind,
        redact(message),
        status=status,
        method=method,
        path=path,
        error_type=redact(error_type) if error_type else None,
        retry_after=retry_after_seconds(headers),
        request_id=hooks.request_id(headers),
    )


class ErrorHooks:
    """How a vendor's error answers read, where vendors differ; each client (VendorClient is one)
    overrides what its vendor does otherwise, so the shared layer has no vendor's name in it."""

    vendor: str
    # The response header that carries the vendor's request id, if it sends one.
    request_id_header: str | None = None

    def __init__(self, vendor: str):
        self.vendor = vendor

    def error_body(self, body: object) -> tuple[str | None, str | None]:
        """(type, message) from a decoded error body (None when it was not JSON): by default the
        common shapes, a JSON object's "type" and its "message" or "error" (a string, or an
        object with a "message"), or a list of strings. Anything else gives no message."""
        if isinstance(body, list):
            parts = [str(item) for item in body if isinstance(item, (str, int, float))]
            return None, "; ".join(parts) or None
        if not isinstance(body, dict):
            return None, None
        error_type = body.get("type")
        message = body.get("message") or body.get("error")
        if isinstance(message, dict):
            message = message.get("message")
        return (str(error_type) if error_type else None), (str(message) if message else None)

    def error_kind(self, status: int, error_type: str | None, message: str | None, kind: ErrorKind) -> ErrorKind:
        """The kind, from the status's (`kind`); a vendor that says "duplicate" in its body
        (a reused idempotency key) says so here."""
        return kind

    def missing_message(self, status: int) -> str | None:
        """What to say of a refusal that came without a message."""
        if status in (401, 403):
            return f"{self.vendor.capitalize()} rejected the credential ({status})"
        return None

    def request_id(self, headers: Mapping[str, str]) -> str | None:
        return _header(headers, self.request_id_header) if self.request_id_header else None


def error_from_exception(
    vendor: str, method: str, path: str, exc: httpx.RequestError, timeout: httpx.Timeout
) -> VendorError:
    """A transient VendorError naming the failure class. httpx's own message is not copied:
    it is free text that may quote the URL."""
    return VendorError(vendor, ErrorKind.TRANSIENT, _describe(exc, timeout), method=method, path=path)


def _describe(exc: httpx.RequestError, timeout: httpx.Timeout) -> str:
    text = str(exc).lower()
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timeout after {timeout.connect}s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"timeout after {timeout.read}s"
    if isinstance(exc, httpx.WriteTimeout):
        return f"write timeout after {timeout.write}s"
    if isinstance(exc, httpx.PoolTimeout):
        return f"no free connection after {timeout.pool}s"
    if isinstance(exc, httpx.ConnectError):
        if "refused" in text:
            return "connection refused"
        if "name or service" in text or "nodename" in text or "getaddrinfo" in text:
            return "DNS lookup failed"
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "server closed the connection" if "disconnect" in text else "HTTP protocol error"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError)):
        return "connection reset"
    return f"request failed ({type(exc).__name__})"


class Redactor:
    """Makes vendor text safe to log, store and report. Validators quote what they were sent,
    so every value Relay knows it sent (the request body's strings, the payload's personal
    values, the credentials) is removed wherever it appears, in any case; emails and phone
    numbers are removed by their shape, for what Relay cannot know. The vendor's error type,
    field names, status and request id stay: they are what an operator needs."""

    def __init__(self, known=()):
        values = sorted(
            {v.strip() for v in known if isinstance(v, str) and len(v.strip()) >= MIN_KNOWN_CHARS},
            key=len,
            reverse=True,
        )
        self._known = (
            re.compile("|".join(f"(?<!\\w){re.escape(v)}(?!\\w)" for v in values), re.IGNORECASE) if values else None
        )

    def __call__(self, text: str) -> str:
        text = " ".join(text.split())
        if self._known:
            text = self._known.sub("<redacted>", text)
        text = without_contact_details(text)
        return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def strings_in(value) -> set[str]:
    """Every string value in a request body (its keys are the vendor's field names)."""
    return {leaf for _, leaf in leaves(value) if isinstance(leaf, str)}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    if isinstance(headers, httpx.Headers):
        return headers.get(name)
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds == seconds and abs(seconds) != float("inf") else None
