"""Logging and Sentry, both kept free of personal data."""
from __future__ import annotations

import logging

from relay.config import Config


def configure_logging() -> None:
    # httpx logs every request URL at INFO, and a Sprig user URL contains the user's email.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def init_sentry(config: Config, transport=None) -> None:
    """Sentry with its Flask and Celery integrations, when SENTRY_DSN is set. `transport`
    replaces the network (the tests capture what would be sent)."""
    if not config.sentry_dsn:
        return
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration

    sentry_sdk.init(
        dsn=config.sentry_dsn,
        transport=transport,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        # Payloads carry names, emails and postal addresses bound for a healthcare platform.
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
    )


def report(message: str, level: str = "error", tags: dict[str, str] | None = None,
           extras: dict | None = None) -> None:
    """One Sentry event; a no-op without SENTRY_DSN. `message` must carry no personal data."""
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        for name, value in (tags or {}).items():
            scope.set_tag(name, value)
        for name, value in (extras or {}).items():
            scope.set_extra(name, value)
        sentry_sdk.capture_message(message, level=level)


def report_exception(exc: BaseException, tags: dict[str, str] | None = None) -> None:
    """The exception's traceback, for Sentry to group: its frames, without its message (it may
    quote payload values) and without local values."""
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        for name, value in (tags or {}).items():
            scope.set_tag(name, value)
        scope.add_event_processor(_without_values)
        sentry_sdk.capture_exception(exc)


def _without_values(event, _hint):
    for exception in (event.get("exception") or {}).get("values") or []:
        exception["value"] = ""
        for frame in (exception.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    return event
