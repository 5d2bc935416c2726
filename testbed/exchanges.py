"""Every request and answer over httpx's real transport, recorded as it went over the wire
(testbed.vendor_contracts checks them against the vendors' documents)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass
class Exchange:
    method: str
    url: str
    request_headers: dict
    request_body: bytes
    status: int
    response_headers: dict
    response_body: bytes


def record_exchanges(monkeypatch) -> list[Exchange]:
    """Every exchange over httpx's real transport from now on, until `monkeypatch` undoes it."""
    exchanges: list[Exchange] = []
    send = httpx.HTTPTransport.handle_request

    def record(transport, request):
        response = send(transport, request)
        body = response.read()
        exchanges.append(
            Exchange(
                request.method,
                str(request.url),
                dict(request.headers),
                request.content,
                response.status_code,
                dict(response.headers),
                body,
            )
        )
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", record)
    return exchanges
