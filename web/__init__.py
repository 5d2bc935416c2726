"""Relay's web process: the app factory (`web:create_app()` for gunicorn and the `relay` CLI)."""
from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from web.config import Config, ConfigError, load_config
from web.db import Database



def create_app(environ: dict[str, str] | None = None, *, require_webhook_token: bool = True) -> Flask:
    """Build the app from the environment (read once, validated here).

    The CLI and the workers pass require_webhook_token=False: only the process that answers
    webhooks needs the SparkLoop token.
    """
    env = dict(os.environ if environ is None else environ)
    app = Flask("relay", instance_path=_instance_path(env))
    config = load_config(env, instance_path=app.instance_path)
    if require_webhook_token and not config.webhook_tokens:
        raise ConfigError(
            "SPARKLOOP_WEBHOOK_TOKEN is not set: copy the token from SparkLoop's webhook settings "
            "(comma-separate two tokens while rotating)"
        )
    app.config["RELAY"] = config
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["relay.db"] = Database(config.database_url)

    from web.observability import configure_logging, init_sentry
    from workers.celery_app import celery_init_app

    configure_logging()
    init_sentry(config)
    celery_init_app(app)

    from web.health import bp as health_bp
    from web.webhooks import bp as webhooks_bp

    app.register_blueprint(health_bp)
    app.register_blueprint(webhooks_bp)
    return app


def _instance_path(env: dict[str, str]) -> str:
    # instance/ next to the checkout (editable install), or RELAY_INSTANCE_PATH when set.
    return env.get("RELAY_INSTANCE_PATH") or str(Path(__file__).resolve().parent.parent / "instance")


__all__ = ["create_app", "Config", "ConfigError"]
