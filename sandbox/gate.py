"""What every vendor request passes through, in this order: latency, auth, rate limit, injected
faults; then the vendor's own headers and the request log on the way out. It also turns errors
(unknown routes, wrong methods, `Rejected`) into the vendor's error format.

The hooks are app-level and pick the vendor by path prefix, so requests that match no route
are authenticated, counted, logged and answered in the vendor's format too."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from sandbox.budget import Window
from sandbox.state import SandboxSettings, SandboxState, new_request_id

log = logging.getLogger("sandbox")

# The `type` a vendor error carries when the caller does not name one. Spruce publishes no list:
# BAD_PARAMETER is documented (the error example in https://developer.sprucehealth.com/reference/contact),
# internal_error was observed by a public client, the rest are ours.
DEFAULT_ERROR_TYPES = {
    400: "BAD_PARAMETER",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "duplicate_request",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "timeout",
}
INJECTED = "injected fault"
ECHOED_CHARS = 2000


class Rejected(Exception):
    """Raised by a vendor handler to answer with the vendor's error format."""

    def __init__(self, status: int, message: str, error_type: str | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.error_type = error_type or DEFAULT_ERROR_TYPES.get(status, "error")


@dataclass(frozen=True)
class Vendor:
    name: str
    prefix: str
    # The one accepted Authorization header; None when `refuse` checks credentials instead.
    authorization: Callable[[SandboxSettings], str] | None
    error: Callable[[int, str, str], Response]  # (status, type, message) in the vendor's format
    throttle_headers: Callable[[int], dict[str, str]]  # on a 429: how long to wait
    response_headers: Callable[[str, Window | None], dict[str, str]]  # (request id, window)
    # For credentials that are not an Authorization header (SparkLoop's X-Api-Key): the answer
    # to a request without the right one, or None to admit it.
    refuse: Callable[[SandboxSettings], Response | None] | None = None

    def refusal(self, settings: SandboxSettings) -> Response | None:
        if self.refuse is not None:
            return self.refuse(settings)
        assert self.authorization is not None, f"{self.name} declares neither authorization nor refuse"
        if request.headers.get("Authorization") != self.authorization(settings):
            return self.error(403, "forbidden", "invalid or disabled credentials")
        return None

    def path(self) -> str:
        """The request path relative to the vendor's base URL."""
        return request.path[len(self.prefix) :] or "/"


def state() -> SandboxState:
    return current_app.extensions["sandbox"]


def vendor_for(path: str) -> Vendor | None:
    vendors = current_app.extensions["sandbox_vendors"]
    return next((v for v in vendors if path == v.prefix or path.startswith(v.prefix + "/")), None)


def install(app: Flask, vendors: list[Vendor]) -> None:
    app.extensions["sandbox_vendors"] = list(vendors)
    app.before_request(_admit)
    app.after_request(_finish)
    app.register_error_handler(Rejected, _rejected)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _crash)


def _admit() -> Response | None:
    vendor = vendor_for(request.path)
    if vendor is None:
        return None
    g.vendor, g.request_id, g.window = vendor, new_request_id(), None
    sandbox = state()
    latency_s = sandbox.latency_s(vendor.name)
    if latency_s:
        time.sleep(latency_s)
    refusal = vendor.refusal(sandbox.settings)
    if refusal is not None:
        return refusal
    g.window = sandbox.count_request(vendor.name)
    if not g.window.allowed:
        response = vendor.error(429, "rate_limited", "rate limit exceeded")
        response.headers.update(vendor.throttle_headers(g.window.reset_after))
        return response
    fault = sandbox.take_fault(vendor.name, request.method, vendor.path())
    if fault and fault["when"] == "after":
        g.fault_after = fault  # the request lands; only its answer is replaced or delayed
        return None
    return _fault_response(vendor, fault) if fault else None


def _finish(response: Response) -> Response:
    vendor: Vendor | None = g.get("vendor")
    if vendor is None:
        return response
    fault = g.pop("fault_after", None)
    if fault:
        response = _fault_response(vendor, fault, handled=response)
    response.headers.update(vendor.response_headers(g.request_id, g.window))
    state().log_request(
        {
            "vendor": vendor.name,
            "method": request.method,
            "path": vendor.path(),
            "status": response.status_code,
            "idempotency_key": request.headers.get("s-idempotency-key"),
            "request_id": g.request_id,
            "at": time.time(),
        }
    )
    return response


def _fault_response(vendor: Vendor, fault: dict, handled: Response | None = None) -> Response:
    if fault["status"] == "timeout":
        # Outlast the client's timeout; without the lock, like every sleep here.
        time.sleep(fault["delay_s"])
        if handled is not None:
            return handled  # processed, answered too late for the client
        status = 504
    else:
        status = fault["status"]
    message = fault["message"] or INJECTED
    if fault["echo"]:  # as validators do: quote what was sent
        message += f": {request.get_data(as_text=True)[:ECHOED_CHARS]}"
    response = vendor.error(status, fault["type"] or DEFAULT_ERROR_TYPES.get(status, "error"), message)
    if status == 429:
        response.headers.update(vendor.throttle_headers(1 if fault["retry_after"] is None else fault["retry_after"]))
    elif fault["retry_after"] is not None:
        # Not on every 503: Relay reads "503 + Retry-After" as a throttle, a bare 503 as an outage.
        response.headers["Retry-After"] = str(fault["retry_after"])
    return response


def _rejected(exc: Rejected):
    vendor = vendor_for(request.path)
    if vendor is None:
        return jsonify(error=exc.message), exc.status
    return vendor.error(exc.status, exc.error_type, exc.message)


def _http_error(exc: HTTPException):
    if exc.code is None or exc.code < 400:
        return exc
    vendor = vendor_for(request.path)
    message = (exc.description or exc.name) if exc.code != 404 else "not found"
    if vendor is None:
        return jsonify(error=message), exc.code
    response = vendor.error(exc.code, DEFAULT_ERROR_TYPES.get(exc.code, "error"), message)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _crash(exc: Exception):
    log.exception("sandbox handler failed")
    vendor = vendor_for(request.path)
    if vendor is None:
        return jsonify(error="sandbox error"), 500
    return vendor.error(500, "internal_error", "unexpected error")
