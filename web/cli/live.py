"""`relay dev`'s terminal: one readable line per webhook and per delivery outcome, made from the
log records Relay writes anyway (relay.webhooks, relay.delivery), in this process or read back
from the worker's JSON log lines. The lines are made from the records' fields, not their
messages (which are for people and may change); those fields carry identifiers, outcomes and
scrubbed reasons only, never a payload value, so neither do these lines:

    14:02:11  webhook  new_referral  event 12  received
    14:02:12  sprig  event 12  delivered (202)
    14:02:12  spruce  event 12  will retry (503) in 30.0 s: Spruce answered 503 …

A stored event is named by its type and status as `relay events list` shows them (`received`,
`unhandled`, `invalid`); a webhook answered without storing anything by what happened to it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime

OUTCOME_WORDS = {
    "succeeded": "delivered",
    "retried": "will retry",
    "deferred": "deferred",
    "failed": "failed",
    "superseded": "superseded: newer values were already sent",
}
# A webhook's outcome (relay.webhooks) in the words the rest of Relay uses: the stored event's
# status where one was stored, else what became of the request.
WEBHOOK_WORDS = {
    "accepted": "received",
    "duplicate": "duplicate (already received)",
    "bad_request": "bad request",
    "too_large": "too large",
    "unavailable": "database unavailable",
}
UNKNOWN_TYPE = "unknown"  # relay.webhooks' label for a type Relay does not know
# A stored type a sender chose is shown only when it looks like a type (no spaces, no @, no
# terminal control characters).
SHOWN_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# The JSON formatter's asctime (relay.observability).
JSON_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"


def live_line(record: logging.LogRecord, event_type_of: Callable[[int], str | None] | None = None) -> str | None:
    """The terminal's line for this record: webhooks and delivery outcomes, Relay's other
    warnings and anyone's errors in brief; None for the rest (they stay in the log files).
    `event_type_of(event_id)`: the stored type of an event whose type Relay does not know."""
    at = time.strftime("%H:%M:%S", time.localtime(record.created))
    fields = record.__dict__
    if record.name == "relay.webhooks" and fields.get("outcome"):
        return f"{at}  webhook  {_webhook(fields, event_type_of)}"
    if record.name == "relay.delivery" and fields.get("destination") and fields.get("event_id"):
        return f"{at}  {fields['destination']}  event {fields['event_id']}  {_outcome(fields)}"
    if record.levelno >= logging.ERROR or (record.levelno >= logging.WARNING and _relays(record.name)):
        message, _, more = record.getMessage().strip().partition("\n")
        return f"{at}  {record.levelname.lower()}  {record.name}: {message}{' …' if more else ''}"
    return None


def _webhook(fields: dict, event_type_of) -> str:
    status = fields.get("http_status")
    what = WEBHOOK_WORDS.get(fields["outcome"], fields["outcome"])
    what += f" ({status})" if status not in (None, 200) else ""
    event_id = fields.get("event_id")
    if not event_id:
        return f"not stored  {what}"
    event_type = fields.get("event_type") or UNKNOWN_TYPE
    if event_type == UNKNOWN_TYPE and event_type_of is not None:
        try:
            stored = event_type_of(event_id)
        except Exception:  # the store is away: the label will do
            stored = None
        if stored and SHOWN_TYPE.fullmatch(stored):
            event_type = stored
    return f"{event_type}  event {event_id}  {what}"


def _relays(logger_name: str) -> bool:
    # Celery's and kombu's warnings (running as root, shutting down) stay in the log file.
    return logger_name == "relay" or logger_name.startswith("relay.")


def _outcome(fields: dict) -> str:
    """From the engine's fields (workers.engine): the outcome, the vendor's status, when it runs
    again and why (Relay's reason, or the vendor's through the Redactor)."""
    status, retry_in_s, reason = fields.get("vendor_status"), fields.get("retry_in_s"), fields.get("reason")
    text = OUTCOME_WORDS.get(fields["outcome"], fields["outcome"]) + (f" ({status})" if status else "")
    if isinstance(retry_in_s, int | float):
        text += f" in {retry_in_s:.1f} s"
    return f"{text}: {reason}" if reason else text


class LiveLines(logging.Handler):
    """Writes live_line() of each record it handles with `write` (one line each)."""

    def __init__(self, write: Callable[[str], None], event_type_of: Callable[[int], str | None] | None = None):
        super().__init__(logging.INFO)
        self.write, self.event_type_of = write, event_type_of

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = live_line(record, self.event_type_of)
            if line is not None:
                self.write(line)
        except Exception:
            self.handleError(record)


def record_from_json(line: str) -> logging.LogRecord | None:
    """A record back from a JSON log line (relay.observability's format: time, level, logger,
    message and the extra fields); None for what is not one (Celery's own prints)."""
    try:
        fields = json.loads(line)
    except ValueError:
        return None
    if not isinstance(fields, dict) or not isinstance(fields.get("logger"), str):
        return None
    level = logging.getLevelName(str(fields.get("level", "INFO")))
    try:
        created = datetime.strptime(str(fields.get("time")), JSON_TIME_FORMAT).timestamp()
    except ValueError:
        created = time.time()
    # A traceback stays in the log file: the terminal's line is the message.
    extra = {
        k: v for k, v in fields.items() if k not in ("logger", "level", "message", "time", "exc_info", "stack_info")
    }
    return logging.makeLogRecord(
        extra
        | {
            "name": fields["logger"],
            "msg": str(fields.get("message", "")),
            "args": None,
            "levelno": level if isinstance(level, int) else logging.INFO,
            "levelname": fields.get("level", "INFO"),
            "created": created,
        }
    )


def pump(lines, log_file, handler: logging.Handler) -> threading.Thread:
    """Copy a child's output lines into `log_file`, and give its log records to `handler`, in a
    thread that ends with the output."""

    def run():
        with log_file:
            for line in lines:
                log_file.write(line)
                log_file.flush()
                record = record_from_json(line)
                if record is not None:
                    handler.handle(record)

    thread = threading.Thread(target=run, name="relay-dev-worker-output", daemon=True)
    thread.start()
    return thread
