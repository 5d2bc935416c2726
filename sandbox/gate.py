"""What every vendor request passes through: latency, auth, rate limit, injected faults, and
the request log. Each vendor blueprint supplies its auth check and error-body format."""
from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable

from flask import Blueprint, Response, current_app, g, request

from sandbox.state import SandboxState

_ALPHABET = string.ascii_uppercase + string.digits


def state() -> SandboxState:
    return current_app.extensions["sandbox"]


def install_gate(bp: Blueprint, vendor: str, credential_of: Callable[[], str | None],
                 error: Callable[[int, str, str], Response], rate_headers: bool) -> None:
    @bp.before_request
    def gate():
        g.request_id = "".join(secrets.choice(_ALPHABET) for _ in range(26))
        sandbox = state()
        latency = sandbox.latency_ms.get(vendor, 0)
        if latency:
            time.sleep(latency / 1000)
        credential = credential_of()
        if credential is None:
            return error(403, "forbidden", "invalid or disabled credentials")
        g.credential = credential
        window = sandbox.count_request(vendor, credential)
        g.rate = window if rate_headers else None
        if not window["allowed"]:
            response = error(429, "rate_limited", "rate limit exceeded")
            response.headers["Retry-After"] = str(window["reset_after"])
            response.headers["ratelimit-reset"] = str(window["reset_after"])
            return response
        fault = sandbox.take_fault(vendor, request.method, _vendor_path(bp))
        if fault:
            if fault["status"] == "timeout":
                time.sleep(float(fault.get("delay_s", 5)))
                return error(504, "timeout", "injected timeout")
            response = error(int(fault["status"]), "injected_fault", "injected fault")
            # A 429 always says how long to wait; a 503 only when the fault asks for it.
            if int(fault["status"]) == 429 or "retry_after" in fault:
                response.headers["Retry-After"] = str(fault.get("retry_after", 1))
            return response
        return None

    @bp.after_request
    def record(response: Response) -> Response:
        response.headers["s-request-id"] = g.get("request_id", "")
        rate = g.get("rate")
        if rate:
            response.headers["s-ratelimit-limit"] = str(rate["limit"])
            response.headers["s-ratelimit-remaining"] = str(rate["remaining"])
            if rate.get("daily_limit"):
                response.headers["s-ratelimit-daily-limit"] = str(rate["daily_limit"])
                response.headers["s-ratelimit-daily-remaining"] = str(rate["daily_remaining"])
        state().log_request({
            "vendor": vendor, "method": request.method, "path": _vendor_path(bp),
            "status": response.status_code,
            "idempotency_key": request.headers.get("s-idempotency-key"),
        })
        return response


def _vendor_path(bp: Blueprint) -> str:
    return request.path[len(bp.url_prefix):] or "/"
