"""The base app factory every process builds on: the web intake (`web.create_app`), the
workers (`celery -A workers`) and the `relay` command."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from relay.config import DEV_WEBHOOK_TOKEN, Config, ConfigError, load_config, load_env_file
from relay.observability import configure_logging, init_sentry
from relay.queue import celery_init_app
from relay.runtime import EXTENSION as RUNTIME
from relay.runtime import Runtime


def create_base_app(environ: dict[str, str] | None = None, *, require_webhook_token: bool = False) -> Flask:
    """Read and validate the environment once; build the process's runtime (relay.runtime:
    configuration, store, Redis) and attach it and Celery.

    Without `environ`, this process's environment, after `.env` (gunicorn's web app and Celery
    come here first). Only the process that answers webhooks needs the SparkLoop token
    (require_webhook_token); with a store other than SQLite it must not be `relay dev`'s."""
    if environ is None:
        load_env_file()
    env = dict(os.environ if environ is None else environ)
    app = Flask("relay", instance_path=_instance_path(env))
    config = load_config(env, instance_path=app.instance_path)
    if require_webhook_token and (problem := webhook_token_problem(config)):
        raise ConfigError(problem)
    app.config["RELAY"] = config
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    runtime = Runtime.build(config)
    app.extensions[RUNTIME] = runtime
    configure_logging(config.log_format)
    init_sentry(config)
    celery_init_app(app)
    return app


def webhook_token_problem(config: Config) -> str | None:
    """Why the process that answers webhooks refuses this configuration's SparkLoop token, or
    None (`relay doctor` reports the same)."""
    if not config.webhook_tokens:
        return (
            "SPARKLOOP_WEBHOOK_TOKEN is not set: copy the token from SparkLoop's webhook settings "
            "(comma-separate two tokens while rotating)"
        )
    if not config.uses_sqlite and DEV_WEBHOOK_TOKEN in config.webhook_tokens:
        return (
            f"SPARKLOOP_WEBHOOK_TOKEN is {DEV_WEBHOOK_TOKEN!r}, `relay dev`'s: set the token from "
            "SparkLoop's webhook settings (DATABASE_URL is not SQLite: this is no dev run)"
        )
    return None


def _instance_path(env: dict[str, str]) -> str:
    # instance/ next to the checkout (editable install), or RELAY_INSTANCE_PATH when set.
    return env.get("RELAY_INSTANCE_PATH") or str(Path(__file__).resolve().parent.parent / "instance")
