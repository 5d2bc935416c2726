"""What Relay's clients send to Sprig and Spruce, and what the sandbox answers, against the
OpenAPI documents the vendors publish (openapi-core). The documents are the vendors', not
ours: they are read from ../shared/vendors/openapi/ and this module skips without them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.responses.exceptions import ResponseNotFound
from werkzeug.datastructures import Headers, ImmutableMultiDict

from relay.runtime import Runtime
from tests.conftest import FIXTURE_NAMES, WITHOUT_EXAMPLE, deliveries, load_fixture, post_event, run_pending
from workers.sprig.client import sprig_client
from workers.spruce.client import spruce_client

DOCUMENTS = Path(__file__).resolve().parents[2] / "shared" / "vendors" / "openapi"
# Where each vendor's sandbox lives, and the server its document names.
VENDORS = {"sprig": ("/sprig", "https://api.sprig.com", ""),
           "spruce": ("/spruce/v1", "https://api.sprucehealth.com", "/v1")}

pytestmark = pytest.mark.skipif(not DOCUMENTS.is_dir(), reason="the vendors' OpenAPI documents are not here")


@dataclass
class Exchange:
    method: str
    url: str
    request_headers: dict
    request_body: bytes
    status: int
    response_headers: dict
    response_body: bytes


class VendorRequest:
    """An httpx request as openapi-core reads one, at the vendor's own server."""

    def __init__(self, exchange: Exchange, host_url: str, path: str):
        self.host_url, self.path, self.method = host_url, path, exchange.method.lower()
        query = urlsplit(exchange.url).query
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(httpx.QueryParams(query).multi_items()),
            header=Headers(exchange.request_headers))
        self.body = exchange.request_body or None
        self.content_type = exchange.request_headers.get("content-type", "")


class VendorResponse:
    def __init__(self, exchange: Exchange):
        self.status_code, self.data = exchange.status, exchange.response_body
        self.headers = Headers(exchange.response_headers)
        self.content_type = exchange.response_headers.get("content-type", "")


@pytest.fixture
def recorded(monkeypatch):
    """Every exchange over httpx's real transport in this test."""
    exchanges: list[Exchange] = []
    send = httpx.HTTPTransport.handle_request

    def record(transport, request):
        response = send(transport, request)
        body = response.read()
        exchanges.append(Exchange(request.method, str(request.url), dict(request.headers), request.content,
                                  response.status_code, dict(response.headers), body))
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", record)
    return exchanges


def documents() -> dict[str, OpenAPI]:
    # Not validated as documents: Sprig's repeats a tag name, which says nothing of its schemas.
    return {vendor: OpenAPI.from_dict(json.loads((DOCUMENTS / f"{vendor}.json").read_text()),
                                      config=Config(spec_validator_cls=None))
            for vendor in VENDORS}


def problems(exchanges: list[Exchange]) -> list[str]:
    found, specs = [], documents()
    for exchange in exchanges:
        path = urlsplit(exchange.url).path
        vendor = next((v for v, (prefix, _, _) in VENDORS.items() if path.startswith(prefix + "/")), None)
        if vendor is None:
            continue
        prefix, host_url, base = VENDORS[vendor]
        request = VendorRequest(exchange, host_url, base + path[len(prefix):])
        where = f"{exchange.method} {path} -> {exchange.status}"
        for check, validate in (("request", lambda: specs[vendor].validate_request(request)),
                                ("response", lambda: specs[vendor].validate_response(request, VendorResponse(exchange)))):
            try:
                validate()
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
    return "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: "
                     + (e.message if e.validator == "required" else f"{e.validator} {str(e.validator_value)[:120]}")
                     for e in errors)


def test_every_request_and_answer_follows_the_vendors_documents(client, app, sandbox, recorded):
    for name in FIXTURE_NAMES:
        post_event(client, load_fixture(name))
    for event_type in WITHOUT_EXAMPLE:
        post_event(client, {"type": event_type, "campaign": {"id": "c_1"},
                            "subscriber": {"id": f"sub_{event_type}", "email": f"{event_type}@example.com"}})
    run_pending(app)
    # The rarer paths: Sprig's read-back after a lost answer; Spruce's answers to refusals.
    sandbox.configure(faults=[{"vendor": "sprig", "status": 500, "times": 1, "method": "POST",
                               "path_prefix": "/v2/users", "when": "after"},
                              {"vendor": "spruce", "status": 429, "times": 1, "path_prefix": "/contacts/search"}])
    payload = load_fixture("reward_unlocked")
    payload["subscriber"].update(id="sub_contract", email="contract@example.com")
    post_event(client, payload)
    run_pending(app, rounds=6, honour_waits=True)
    # The reads a delivery makes only now and then: a contact by id, a conversation's items.
    spruce = spruce_client(Runtime.of(app))
    note = next(d for d in deliveries(app) if "spruce.conversation" in (d.progress or {}))
    assert spruce.get_contact(note.progress["spruce.contact"])["id"] == note.progress["spruce.contact"]
    assert list(spruce.iter_conversation_items(note.progress["spruce.conversation"]))
    assert sprig_client(Runtime.of(app)).get_user("nobody@example.com") is None

    vendors_called = {urlsplit(e.url).path.split("/")[1] for e in recorded}
    assert {"sprig", "spruce"} <= vendors_called
    assert any(e.method == "GET" and "/v2/users/" in e.url for e in recorded)  # the read-back ran
    assert problems(recorded) == []


def test_the_check_finds_a_request_or_an_answer_the_documents_refuse():
    headers = {"content-type": "application/json", "authorization": "Bearer x"}
    refused = Exchange("POST", "http://127.0.0.1:1/spruce/v1/contacts", headers, b'{"category": 7}',
                       201, {"content-type": "application/json"}, b'{"id": "entity_1"}')
    [request, answer] = problems([refused])
    assert request.startswith("spruce request POST /spruce/v1/contacts -> 201: category: enum")
    assert answer.startswith("spruce response") and "'displayName' is a required property" in answer
