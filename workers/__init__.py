"""Relay's delivery engine. `celery -A workers worker` and `celery -A workers beat` find the
Celery app here; it is built on first use from the base app factory, so every process shares
one configuration."""

from __future__ import annotations

from functools import cache


@cache
def _celery_app():
    from relay.app import create_base_app

    return create_base_app().extensions["celery"]


def __getattr__(name: str):
    if name in ("app", "celery"):
        return _celery_app()
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
