"""`relay dev`'s terminal lines are made from the delivery records' fields (workers.engine), not
from their messages: a message worded differently changes no line."""
from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from relay.observability import JSON_FIELDS, JSON_RENAMES
from web.cli.live import live_line, record_from_json


def delivery_record(message: str, **fields) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "relay.delivery", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": message, "args": None})
    record.__dict__.update({"event_id": 7, "delivery_id": 3, "destination": "spruce", **fields})
    return record


def test_a_delivery_line_reads_the_records_fields_not_its_message():
    retried = delivery_record("reworded: run 3 will go again", outcome="retried", vendor_status=503,
                              retry_in_s=30.04, reason="Spruce answered 503: down for maintenance")
    failed = delivery_record("", outcome="failed", vendor_status=400, retry_in_s=None,
                             reason="Sprig answered 400: bad attribute")
    delivered = delivery_record("delivery 3 succeeded in 0.2 s: ignore this", outcome="succeeded",
                                vendor_status=200, reason=None)

    lines = [live_line(record)[10:] for record in (retried, failed, delivered)]

    assert lines == ["spruce  event 7  will retry (503) in 30.0 s: Spruce answered 503: down for maintenance",
                     "spruce  event 7  failed (400): Sprig answered 400: bad attribute",
                     "spruce  event 7  delivered (200)"]


def test_the_fields_survive_the_workers_json_lines():
    record = delivery_record("words", outcome="deferred", vendor_status=429, retry_in_s=10.0,
                             reason="Spruce answered 429: slow down")
    as_json = JsonFormatter(JSON_FIELDS, style="{", rename_fields=JSON_RENAMES)

    read_back = live_line(record_from_json(as_json.format(record)))

    assert read_back[10:] == "spruce  event 7  deferred (429) in 10.0 s: Spruce answered 429: slow down"
