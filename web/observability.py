"""Sentry: on only when SENTRY_DSN is set, and never with personal data."""
from __future__ import annotations

from web.config import Config


def init_sentry(config: Config) -> None:
    if not config.sentry_dsn:
        return
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration

    sentry_sdk.init(
        dsn=config.sentry_dsn,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        # Payloads carry names, emails and postal addresses bound for a healthcare platform.
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
    )
