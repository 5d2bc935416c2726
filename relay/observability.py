"""Logs and Sentry, both kept free of personal data.

Logs: one handler on the root logger for every process (web, worker, beat, the CLI), JSON
lines (python-json-logger) or text, as LOG_FORMAT says; Celery is told not to set up logging of
its own, and gunicorn.conf.py takes `gunicorn_logconfig()`. A line's fields beyond the message
(`event_id`, `delivery_id`, `destination`, `outcome`, …) come from `extra=`: identifiers and
measurements, never a payload value.

Sentry: the current `data_collection` API with nothing personal collected, sentry-sdk's
EventScrubber, and a `before_send`/`before_breadcrumb` scrubber on top that removes emails,
phone numbers and the values of personal or secret keys wherever they appear. sentry-sdk ignores
its `event_scrubber` option once `data_collection` is given, so `before_send` runs the
EventScrubber itself before Relay's own pass.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Literal

from relay.config import Config, log_format
from schemas.personal import map_leaves, without_contact_details

if TYPE_CHECKING:
    from sentry_sdk._types import MonitorConfig  # the type capture_checkin declares

__all__ = [
    "SWEEP_MONITOR",
    "check_in",
    "configure_logging",
    "gunicorn_logconfig",
    "init_sentry",
    "log_format",
    "report",
    "report_exception",
    "say_as_json",
    "scrub",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "{asctime}{levelname}{name}{message}"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


def _formatter(style: str) -> logging.Formatter:
    if style == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(JSON_FIELDS, style="{", rename_fields=JSON_RENAMES)
    return logging.Formatter(TEXT_FORMAT)


class _CommandsReportOnTerminals(logging.Filter):
    """A `relay` command on a terminal: its report is what the operator reads there, and its
    INFO lines (an erasure's or a backfill's record, for a log collector) would land in the
    middle of it; its warnings and errors still show. Lines of the services (the web app, the
    Celery worker, `relay dev`'s own log file) and of any command whose stderr is not a
    terminal all stay."""

    def __init__(self, handler: logging.StreamHandler):
        super().__init__()
        self._handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not _isatty(self._handler.stream):
            return True
        return not _relay_command_running()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _relay_command_running() -> bool:
    """True in the thread that runs a `relay` command (a Flask CLI group's click context)."""
    import click
    from flask.cli import FlaskGroup

    ctx = click.get_current_context(silent=True)
    return ctx is not None and isinstance(ctx.find_root().command, FlaskGroup)


class _RelayHandler(logging.StreamHandler):
    relay = True  # marks Relay's own handler among the root's (relay dev reroutes it)


def configure_logging(style: str) -> None:
    """Every line of this process to stderr, in `style` (LOG_FORMAT: json or text); a command's
    own output goes to stdout, so the two never mix (on a terminal, see _CommandsReportOnTerminals)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "relay", False)), None)
    if handler is None:
        handler = _RelayHandler()
        handler.addFilter(_CommandsReportOnTerminals(handler))
        root.addHandler(handler)
    handler.setFormatter(_formatter(style))
    logging.captureWarnings(True)  # Python's warnings are lines of this process too
    if root.level == logging.WARNING:  # Python's default: nothing set it yet
        root.setLevel(logging.INFO)
    # httpx logs every request URL at INFO, and a Sprig user URL contains the user's email.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def say_as_json(message: str, stream=sys.__stderr__) -> None:
    """For celery.apps.worker.safe_say, which prints the worker's shutdown messages from its
    signal handlers with os.write: the same, as one JSON line (no logging lock is taken)."""
    line = json.dumps(
        {
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "level": "WARNING",
            "logger": "celery.apps.worker",
            "message": message.strip(),
        }
    )
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(stream.fileno(), f"{line}\n".encode())


def gunicorn_logconfig(style: str) -> dict:
    """gunicorn's own loggers (its errors and the access log), in the same format."""
    formatter = (
        {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": JSON_FIELDS, "style": "{", "rename_fields": JSON_RENAMES}
        if style == "json"
        else {"format": TEXT_FORMAT}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "relay", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"relay": formatter},
        "handlers": {"console": handler},
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            name: {"level": "INFO", "handlers": ["console"], "propagate": False}
            for name in ("gunicorn.error", "gunicorn.access")
        },
    }


# --- Sentry -----------------------------------------------------------------------------------

FILTERED = "[Filtered]"
# Keys whose values are personal or secret in anything Sentry could be sent (payload fields,
# vendor bodies, headers, URL parameters).
PERSONAL_KEYS = frozenset(
    {
        "email",
        "emailaddress",
        "emailaddresses",
        "email_address",
        "name",
        "first_name",
        "last_name",
        "given_name",
        "givenname",
        "family_name",
        "familyname",
        "displayname",
        "middlename",
        "phone",
        "phone_number",
        "phonenumbers",
        "address",
        "shipping_details",
        "subscriber",
        "referrer",
        "lead",
        "referral",
        "payload",
        "value",
        "text",
        "body",
        "data",
        "userid",
        "user_id",
        "token",
        "api_key",
        "apikey",
        "x-api-key",
        "sparkloop-token",
        "authorization",
        "secret",
        "password",
        "dsn",
        "key",
        "keys",
        "cookie",
        "set-cookie",
    }
)


def scrub(value, key: str | None = None):
    """`value` with personal data removed: the values of personal or secret keys, and emails
    and phone numbers (also URL-encoded) in any text."""
    if key is not None and key.lower().replace(" ", "_") in PERSONAL_KEYS:
        return FILTERED if value not in (None, "", [], {}) else value
    if isinstance(value, dict):
        return {k: scrub(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(item) for item in value]
    return _scrub_text(value)


def _scrub_text(value):
    """Emails and phone numbers out of every string, keys left as they are."""
    return map_leaves(value, lambda leaf, _key: without_contact_details(leaf) if isinstance(leaf, str) else leaf)


# Where an event can hold what the app saw; the rest (SDK, runtime, frames) is Sentry's own.
_SCRUBBED_BY_KEY = ("request", "extra", "breadcrumbs", "tags")


def _event_scrubber():
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST, EventScrubber

    return EventScrubber(
        denylist=[*DEFAULT_DENYLIST, *PERSONAL_KEYS], pii_denylist=DEFAULT_PII_DENYLIST, recursive=True
    )


def _before_send(event, _hint, event_scrubber=None):
    (event_scrubber or _event_scrubber()).scrub_event(event)
    event.pop("user", None)
    logentry = event.get("logentry")
    if isinstance(logentry, dict):  # the template stays, its arguments go (see _before_breadcrumb)
        logentry.pop("params", None)
        logentry.pop("formatted", None)
    request = event.get("request")
    if isinstance(request, dict):
        for part in ("data", "cookies", "query_string"):
            request.pop(part, None)
    for section in _SCRUBBED_BY_KEY:
        if section in event:
            event[section] = scrub(event[section])
    return _scrub_text(event)


def _before_breadcrumb(crumb, hint):
    # A log line's breadcrumb keeps its template, not its arguments: a name in free text is
    # recognisable by no pattern, and a library's log line may quote one.
    record = (hint or {}).get("log_record")
    if record is not None and record.args:
        crumb["message"] = str(record.msg)
        crumb.pop("data", None)
    return scrub(crumb)


def init_sentry(config: Config, transport=None) -> None:
    """Sentry with its Flask and Celery integrations, when SENTRY_DSN is set. `transport`
    replaces the network (the tests capture what would be sent)."""
    if not config.sentry_dsn:
        return
    import sentry_sdk
    from sentry_sdk.integrations.atexit import AtexitIntegration
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    event_scrubber = _event_scrubber()
    sentry_sdk.init(
        dsn=config.sentry_dsn,
        transport=transport,
        environment=config.sentry_environment,
        release=config.sentry_release,
        traces_sample_rate=config.sentry_traces_sample_rate,
        # Log lines are breadcrumbs, not events: Sentry's events are Relay's own reports (one per
        # failed delivery, per breaker opening) and unhandled errors, each once.
        integrations=[
            FlaskIntegration(),
            CeleryIntegration(monitor_beat_tasks=False),
            LoggingIntegration(level=logging.INFO, event_level=None),
            AtexitIntegration(callback=_pending_at_exit),
        ],
        # Payloads carry names, emails and postal addresses bound for a healthcare platform.
        data_collection={
            "user_info": False,
            "http_bodies": [],
            "database_query_data": False,
            "queues": False,
            "stack_frame_variables": False,
        },
        before_send=lambda event, hint: _before_send(event, hint, event_scrubber),
        before_breadcrumb=_before_breadcrumb,
        max_request_body_size="never",
    )


def _pending_at_exit(pending: int, timeout: float) -> None:
    """Sentry's own notice at exit is three lines of plain text on stderr; this is one log line."""
    logging.getLogger("relay.sentry").info(
        "sending %d pending Sentry events before exiting (up to %.0f s)", pending, timeout
    )


def report(
    message: str,
    level: Literal["fatal", "critical", "error", "warning", "info", "debug"] = "error",
    tags: dict[str, str] | None = None,
    extras: dict | None = None,
    fingerprint: list[str] | None = None,
) -> None:
    """One Sentry event; a no-op without SENTRY_DSN. `message` must carry no personal data."""
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        for name, value in (tags or {}).items():
            scope.set_tag(name, value)
        for name, value in (extras or {}).items():
            scope.set_extra(name, value)
        if fingerprint:
            scope.fingerprint = fingerprint
        sentry_sdk.capture_message(message, level=level)


# Sentry Crons: the sweep runs every 10 s; it checks in at most once a minute (check-ins are
# rate limited), and Sentry alerts when two minutes pass without one (a second beat takes over a
# dead one's lock within 50 s). Sentry creates the monitor from this config on the first check-in.
SWEEP_MONITOR = "relay-sweep"
SWEEP_MONITOR_CONFIG: MonitorConfig = {
    "schedule": {"type": "interval", "value": 1, "unit": "minute"},
    "checkin_margin": 2,
    "max_runtime": 1,
    "failure_issue_threshold": 1,
    "recovery_threshold": 1,
}


def check_in(
    ok: bool, duration_s: float, monitor: str = SWEEP_MONITOR, monitor_config: MonitorConfig = SWEEP_MONITOR_CONFIG
) -> None:
    """One check-in for a cron monitor; a no-op without SENTRY_DSN."""
    from sentry_sdk.crons import capture_checkin
    from sentry_sdk.crons.consts import MonitorStatus

    capture_checkin(
        monitor_slug=monitor,
        status=MonitorStatus.OK if ok else MonitorStatus.ERROR,
        duration=duration_s,
        monitor_config=monitor_config,
    )


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
