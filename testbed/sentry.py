"""Sentry is a boundary the tests cannot run; what the SDK sends is the thing under test.
`SentryCapture` keeps what an in-process client would send; `SentryIngest` is a loopback
stand-in for Sentry's ingest endpoint, for processes that send to SENTRY_DSN over real HTTP: it
keeps every envelope it is sent (gzip-encoded or not) and answers 200, as Sentry does."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sentry_sdk
from sentry_sdk.transport import Transport


def sentry_off() -> None:
    """No Sentry client, as before any init: sentry_sdk.init() without a DSN leaves an active one."""
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


class SentryCapture(Transport):
    """What Sentry would be sent, as text."""

    def __init__(self):
        super().__init__()
        self.sent: list[str] = []

    def capture_envelope(self, envelope):
        self.sent.append(envelope.serialize().decode("utf-8", "replace"))


class SentryIngest:
    def __init__(self):
        self.envelopes: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with owner._lock:
                    owner.envelopes.append(body.decode("utf-8", "replace"))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="sentry-ingest")
        self._thread.start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self._server.server_port}/1"

    def items(self) -> list[dict]:
        """Every envelope item's body, parsed, with its type from the item header."""
        found = []
        with self._lock:
            envelopes = list(self.envelopes)
        for envelope in envelopes:
            lines = envelope.splitlines()[1:]
            for header, body in zip(lines[0::2], lines[1::2], strict=False):
                try:
                    found.append({"_type": json.loads(header).get("type"), **json.loads(body)})
                except (ValueError, TypeError):
                    continue
        return found

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.envelopes)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
