"""Loopback ports for the servers and processes tests start, and an app served on one."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from werkzeug.serving import make_server


def free_port() -> int:
    """A loopback port nothing listens on now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(app) -> Iterator[str]:
    """`app` served over HTTP on a loopback port, in a thread, while the block runs: its address."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    # Polled for shutdown every 20 ms, not every 0.5 s: stopping it is no longer half a second a test.
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(timeout=10)
