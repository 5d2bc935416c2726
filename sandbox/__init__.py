"""A local, stateful imitation of the Sprig and Spruce APIs that Relay's dev mode, tests and
benchmarks talk to over real HTTP. It keeps state and enforces the documented rules (auth,
idempotency, rate limits, paging, error bodies); switches add latency and faults.

Sprig is served under /sprig, Spruce under /spruce/v1, the switches under /_sandbox."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import Flask, request
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.state import SandboxSettings, SandboxState

__all__ = ["SandboxSettings", "RunningSandbox", "create_sandbox_app", "serve_in_thread"]


def create_sandbox_app(settings: SandboxSettings | None = None) -> Flask:
    from sandbox import control, sprig, spruce

    app = Flask("sandbox")
    app.extensions["sandbox"] = SandboxState(settings or SandboxSettings())
    for bp in (sprig.bp, spruce.bp, control.bp):
        app.register_blueprint(bp)

    @app.errorhandler(404)
    def not_found(_exc):
        if request.path.startswith(spruce.bp.url_prefix):
            return spruce.error(404, "NOT_FOUND", "not found")
        return "", 404

    return app


@dataclass
class RunningSandbox:
    app: Flask
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.server_port}"

    @property
    def sprig_url(self) -> str:
        return self.url + "/sprig"

    @property
    def spruce_url(self) -> str:
        return self.url + "/spruce/v1"

    @property
    def state(self) -> SandboxState:
        return self.app.extensions["sandbox"]

    def configure(self, **changes) -> None:
        self.state.configure(changes)

    def reset(self) -> None:
        self.state.reset()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def serve_in_thread(host: str = "127.0.0.1", port: int = 0,
                    settings: SandboxSettings | None = None) -> RunningSandbox:
    app = create_sandbox_app(settings)
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="sandbox", daemon=True)
    thread.start()
    return RunningSandbox(app, server, thread)
