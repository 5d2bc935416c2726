"""Relay's workers. `celery -A workers worker` and `celery -A workers beat` find the Celery app
here; it is built on first use from web.create_app(), so both processes share one config."""
from __future__ import annotations

from functools import cache


@cache
def _celery_app():
    from web import create_app

    return create_app(require_webhook_token=False).extensions["celery"]


def __getattr__(name: str):
    if name in ("app", "celery"):
        return _celery_app()
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
