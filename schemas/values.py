"""Reading values out of payloads whose fields are not type-checked (undocumented SparkLoop
events, API rows): keep a value only when it has the expected type."""

from __future__ import annotations


def of_type(value, kind: type):
    return value if isinstance(value, kind) else None


def integer(value) -> int | None:
    """A JSON integer (booleans are not numbers here)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def clean(value) -> str | None:
    """A scalar as trimmed text; None for missing, blank, booleans and containers."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def clean_email(value) -> str | None:
    text = clean(of_type(value, str))
    return text.lower() if text else None
