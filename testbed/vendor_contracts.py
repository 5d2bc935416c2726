"""What Relay's clients send to Sprig and Spruce, and what the sandbox answers, checked against
the OpenAPI documents the vendors publish (openapi-core). The documents are the vendors', not
ours: they are read from ../shared/vendors/openapi/; tests that need them skip without them."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.responses.exceptions import ResponseNotFound
from werkzeug.datastructures import Headers, ImmutableMultiDict

from testbed.exchanges import Exchange

DOCUMENTS = Path(__file__).resolve().parents[2] / "shared" / "vendors" / "openapi"
# Where each vendor's sandbox lives, and the server its document names.
VENDORS = {
    "sprig": ("/sprig", "https://api.sprig.com", ""),
    "spruce": ("/spruce/v1", "https://api.sprucehealth.com", "/v1"),
}


class VendorRequest:
    """An httpx request as openapi-core reads one, at the vendor's own server."""

    def __init__(self, exchange: Exchange, host_url: str, path: str):
        self.host_url, self.path, self.method = host_url, path, exchange.method.lower()
        query = urlsplit(exchange.url).query
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(httpx.QueryParams(query).multi_items()), header=Headers(exchange.request_headers)
        )
        self.body = exchange.request_body or None
        self.content_type = exchange.request_headers.get("content-type", "")


class VendorResponse:
    def __init__(self, exchange: Exchange):
        self.status_code, self.data = exchange.status, exchange.response_body
        self.headers = Headers(exchange.response_headers)
        self.content_type = exchange.response_headers.get("content-type", "")


def documents() -> dict[str, OpenAPI]:
    # Not validated as documents: Sprig's repeats a tag name, which says nothing of its schemas.
    return {
        vendor: OpenAPI.from_dict(
            json.loads((DOCUMENTS / f"{vendor}.json").read_text()), config=Config(spec_validator_cls=None)
        )
        for vendor in VENDORS
    }


def problems(exchanges: list[Exchange]) -> list[str]:
    found, specs = [], documents()
    for exchange in exchanges:
        path = urlsplit(exchange.url).path
        vendor = next((v for v, (prefix, _, _) in VENDORS.items() if path.startswith(prefix + "/")), None)
        if vendor is None:
            continue
        prefix, host_url, base = VENDORS[vendor]
        request = VendorRequest(exchange, host_url, base + path[len(prefix) :])
        where = f"{exchange.method} {path} -> {exchange.status}"
        spec, response = specs[vendor], VendorResponse(exchange)
        checks = (
            ("request", spec.validate_request, (request,)),
            ("response", spec.validate_response, (request, response)),
        )
        for check, validate, args in checks:
            try:
                validate(*args)
            except ResponseNotFound:
                # Spruce documents its 429 in the overview (rate limiting), not per operation.
                if exchange.status != 429:
                    found.append(f"{vendor} {check} {where}: an answer the document does not list")
            except Exception as exc:  # openapi-core's errors: each names what differs
                found.append(f"{vendor} {check} {where}: {_explain(exc)}")
    return found


def _explain(exc: Exception) -> str:
    """The schema errors behind an openapi-core error, by path and rule (not by value)."""
    cause = exc.__cause__ or exc
    errors = getattr(cause, "schema_errors", None)
    if not errors:
        return f"{type(exc).__name__}: {str(cause)[:300]}"
    return "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: "
        + (e.message if e.validator == "required" else f"{e.validator} {str(e.validator_value)[:120]}")
        for e in errors
    )
