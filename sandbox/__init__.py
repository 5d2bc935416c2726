"""A local, stateful imitation of the Sprig and Spruce APIs (and of SparkLoop's API v2, which
`relay backfill` reads) that Relay's dev mode, tests and benchmarks talk to over real HTTP. It
keeps state and enforces the documented rules (auth, validation, idempotency, rate limits,
paging, error bodies); switches add latency, faults and read-after-write lag. With SandboxSettings.state_file, the
records outlive a restart (sandbox.state.StateFile).

Sprig is served under /sprig, Spruce under /spruce/v1, SparkLoop under /sparkloop/v2, the
switches under /_sandbox."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.state import SandboxSettings, SandboxState, StateFile

__all__ = ["FIXTURES", "RunningSandbox", "SandboxSettings", "SandboxState", "create_sandbox_app", "serve_in_thread"]

STOP_TIMEOUT_S = 10
# SparkLoop's documented example payloads, which `relay dev` and the tests post.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sparkloop"
MAX_BODY_BYTES = 1024 * 1024
READS = ("GET", "HEAD", "OPTIONS")


class _VendorOrderJSON(DefaultJSONProvider):
    sort_keys = False  # keys in the order the vendors' examples show them


def create_sandbox_app(settings: SandboxSettings | None = None) -> Flask:
    from sandbox import control, gate, sparkloop, sprig, spruce

    app = Flask("sandbox")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json = _VendorOrderJSON(app)
    app.url_map.strict_slashes = False
    app.url_map.converters["spruce_id"] = spruce.IdConverter
    settings = settings or SandboxSettings()
    app.extensions["sandbox"] = SandboxState(settings)
    if settings.state_file:
        _keep_in_file(app, StateFile(settings.state_file))
    gate.install(app, [sprig.VENDOR, spruce.VENDOR, sparkloop.VENDOR])
    for blueprint in (sprig.bp, spruce.bp, sparkloop.bp, control.bp):
        app.register_blueprint(blueprint)
    return app


def _keep_in_file(app: Flask, state_file: StateFile) -> None:
    state: SandboxState = app.extensions["sandbox"]
    state_file.load(state)
    app.extensions["sandbox.state_file"] = state_file

    @app.after_request
    def save_changes(response: Response) -> Response:
        if request.method not in READS:  # only writes change records (and a Sprig purge, saved at stop)
            state_file.save(state)
        return response


@dataclass
class RunningSandbox:
    app: Flask
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host = self.server.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server.server_port}"

    @property
    def sprig_url(self) -> str:
        return self.url + "/sprig"

    @property
    def spruce_url(self) -> str:
        return self.url + "/spruce/v1"

    @property
    def sparkloop_url(self) -> str:
        return self.url + "/sparkloop/v2"

    @property
    def state(self) -> SandboxState:
        return self.app.extensions["sandbox"]

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Same as POST /_sandbox/config; raises ValueError on an invalid change."""
        return self.state.configure(changes)

    def add_sparkloop_subscribers(self, subscribers: list[dict]) -> list[dict]:
        """Same as POST /_sandbox/sparkloop/subscribers; raises ValueError, adding none, on an
        invalid item."""
        from sandbox.sparkloop import add_subscribers

        added = add_subscribers(self.state, subscribers)
        self._save()
        return added

    def reset(self) -> None:
        """Same as POST /_sandbox/reset."""
        self.state.reset()
        self._save()

    def snapshot(self) -> dict[str, Any]:
        """Same as GET /_sandbox/state."""
        return self.state.snapshot()

    def stats(self) -> dict[str, dict[str, int]]:
        """Same as GET /_sandbox/stats."""
        return self.state.stats()

    @property
    def state_file(self) -> StateFile | None:
        return self.app.extensions.get("sandbox.state_file")

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()  # blocks until serve_forever returns, so only while it runs
        self.server.server_close()
        self.thread.join(timeout=STOP_TIMEOUT_S)
        self._save()

    def _save(self) -> None:
        if self.state_file is not None:
            self.state_file.save(self.state)

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def serve_in_thread(host: str = "127.0.0.1", port: int = 0, settings: SandboxSettings | None = None) -> RunningSandbox:
    """Serve the sandbox from a daemon thread; port 0 picks a free port (see `.url`)."""
    app = create_sandbox_app(settings)
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=f"sandbox:{server.server_port}", daemon=True)
    thread.start()
    return RunningSandbox(app, server, thread)
