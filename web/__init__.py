"""Relay's web process: the HTTP intake (`web:create_app()` for gunicorn) and, in `web.cli`, the
`relay` command. The intake loads nothing of the delivery engine: it stores each event and its
deliveries and answers; the workers' dispatcher (workers/dispatch.py) publishes them."""

from __future__ import annotations

from flask import Flask

from relay.app import create_base_app


def create_app(environ: dict[str, str] | None = None) -> Flask:
    """The webhook intake, health checks and (with RELAY_CONSOLE_SECRET_KEY) the console; needs
    SPARKLOOP_WEBHOOK_TOKEN."""
    app = create_base_app(environ, require_webhook_token=True)
    from web.console import register_console
    from web.health import bp as health_bp
    from web.metrics import bp as metrics_bp
    from web.openapi import bp as openapi_bp
    from web.security import secure
    from web.webhooks import bp as webhooks_bp

    for blueprint in (health_bp, webhooks_bp, openapi_bp, metrics_bp):
        app.register_blueprint(blueprint)
    register_console(app)
    secure(app, app.config["RELAY"].proxy_hops)
    return app


__all__ = ["create_app"]
