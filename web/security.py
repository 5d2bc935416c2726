"""What every response of the web process shares: the client's address and scheme as the PaaS
router saw them (werkzeug's ProxyFix, RELAY_PROXY_HOPS routers trusted), security headers, and
errors answered as one JSON line that names the problem, never a stack trace.

Relay serves JSON to machines and no page a browser should render, so the headers forbid
everything: no framing, no scripts, no sniffing, no referrer."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from relay.observability import report_exception

log = logging.getLogger("relay.web")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
HSTS = "max-age=31536000; includeSubDomains"


def secure(app: Flask, proxy_hops: int) -> None:
    if proxy_hops:
        # Flask's documented way to put middleware around the app (mypy sees a method replaced).
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxy_hops, x_proto=proxy_hops, x_host=proxy_hops, x_port=proxy_hops
        )
    app.after_request(_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)


def _headers(response: Response) -> Response:
    # `in`, then add: werkzeug's setdefault raises and catches a KeyError for every header it
    # adds, nine exceptions a request (about 4% of a webhook's CPU).
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers.add(name, value)
    if request.is_secure and "Strict-Transport-Security" not in headers:
        headers.add("Strict-Transport-Security", HSTS)
    return response


def _http_error(exc: HTTPException):
    # werkzeug's own headers stay (Allow on a 405, as RFC 9110 requires; Retry-After; …); only
    # its HTML body and that body's type and length are replaced.
    headers = [
        (name, value) for name, value in exc.get_headers() if name.lower() not in ("content-type", "content-length")
    ]
    return jsonify(error=exc.description or exc.name), exc.code or 500, headers


def _unexpected_error(exc: Exception):
    # The class only: a message can quote the payload. Sentry gets the frames (no message, no
    # locals); Flask would not report an exception that a handler answered.
    log.error("unexpected %s while answering %s %s", type(exc).__name__, request.method, request.path)
    report_exception(exc, tags={"path": request.path})
    return jsonify(error="internal error; the request was not processed, please retry"), 500
