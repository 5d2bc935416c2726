"""What the store can keep: JSON that PostgreSQL's jsonb and SQLite both accept as it was sent.

Python's json module accepts more than that: NaN and Infinity, numbers beyond what a double
holds (1e999 overflows to infinity; an integer of 400 digits is the same number to JSON and to
the published schema, so it is refused alike, by its exact decimal value), strings holding NUL
(jsonb refuses \\u0000) or unpaired surrogates (not encodable as UTF-8), and nesting deep enough
to exhaust the recursion limit of whatever walks the value later. None of these is in any
SparkLoop payload, and none has a faithful storable form, so they are refused with the path of
the first offending value; nothing else is changed but one thing: a number written with a
fraction or an exponent that is a whole number (`5.0`, `1e2`) is read as the integer it is,
because JSON and the published schema (/openapi.json) compare numbers by value, so an integer
field takes it.

Hand-written: a walk over the decoded value, iterative so that depth itself cannot crash it.
The walk is skipped when the body's bytes already rule out all of the above (no escape that
could make a NUL or a surrogate, strict UTF-8, fewer brackets than the depth limit, no number
long enough to be out of range, no NaN or Infinity met while decoding): most bodies, and on the
intake's path, per webhook, the walk cost more than the decoding itself.
"""

from __future__ import annotations

import json
import math
import re
import sys
from decimal import Decimal

MAX_DEPTH = 32  # SparkLoop's payloads nest 3 levels
# A double's largest, exactly, as an integer: /openapi.json writes every number's bounds with it,
# digit for digit, so that a validator reading numbers as decimals and one reading them as doubles
# agree with Relay at the edge.
LARGEST_NUMBER = int(sys.float_info.max)
NUL = "\x00"
# A number of this many digits may be out of range; a shorter one is not.
_LONG_NUMBER = re.compile(rb"\d{%d}" % len(str(LARGEST_NUMBER)))


class NotStorable(ValueError):
    """`fields` says where, in the shape of marshmallow's errors; no value is quoted."""

    def __init__(self, message: str, fields: dict):
        super().__init__(message)
        self.message, self.fields = message, fields


class _NonFinite:
    """What json.loads makes of NaN, Infinity, -Infinity and a number out of range here, so that
    the walk can say where."""


def _number(text: str):
    exact = Decimal(text)
    if abs(exact) > LARGEST_NUMBER:
        return _NonFinite()
    return int(exact) if exact == exact.to_integral_value() else float(text)


def loads(raw: bytes) -> object:
    """Decode a request body; NotStorable when it is not JSON the store can keep."""
    non_finite: list[_NonFinite] = []

    def constant(_text: str) -> _NonFinite:
        non_finite.append(_NonFinite())
        return non_finite[-1]

    def number(text: str):
        value = _number(text)
        if isinstance(value, _NonFinite):
            non_finite.append(value)
        return value

    try:
        value = json.loads(raw, parse_constant=constant, parse_float=number)
    except RecursionError:
        raise NotStorable(
            "request body is nested too deeply", {"_body": [f"Nested deeper than {MAX_DEPTH} levels."]}
        ) from None
    except json.JSONDecodeError as exc:  # its message names a position, never the content
        raise NotStorable(
            "request body is not valid JSON",
            {"_body": [f"Not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."]},
        ) from None
    except (ValueError, UnicodeDecodeError):  # not UTF-8, or an integer of more than 4300 digits
        raise NotStorable(
            "request body is not valid JSON",
            {"_body": ["Not valid JSON: not UTF-8 text, or a number too long to read."]},
        ) from None
    if not non_finite and _nothing_to_refuse(raw):
        return value
    problem = first_problem(value)
    if problem:
        path, reason = problem
        raise NotStorable(f"request body cannot be stored: {reason}", _at(path, reason))
    return value


def _nothing_to_refuse(raw: bytes) -> bool:
    """True when no value decoded from `raw` can hold what first_problem looks for (NaN and
    Infinity aside, which the decoding reports). Text holds a NUL or a surrogate only through
    a \\u escape, a NUL byte (which also makes json read UTF-16 or UTF-32), a UTF-16 byte order
    mark, or bytes that are not strict UTF-8 (json decodes with surrogatepass); nesting needs a
    bracket per level; an out-of-range number needs as many digits as the largest."""
    if b"\\u" in raw or b"\x00" in raw or raw[:1] in (b"\xfe", b"\xff"):
        return False
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH or _LONG_NUMBER.search(raw):
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def first_problem(value) -> tuple[list[str], str] | None:
    """(path, reason) of the first value the store cannot keep, or None."""
    stack: list[tuple[object, list[str], int]] = [(value, [], 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return path, f"Nested deeper than {MAX_DEPTH} levels."
        if isinstance(item, dict):
            for key, child in item.items():
                reason = _text_problem(key)
                if reason:  # a key that cannot be stored cannot name its own place either
                    return [*path, "(a key)"], f"Key {reason}"
                stack.append((child, [*path, key], depth + 1))
        elif isinstance(item, list):
            stack.extend((child, [*path, str(index)], depth + 1) for index, child in enumerate(item))
        elif isinstance(item, str):
            reason = _text_problem(item)
            if reason:
                return path, f"Text {reason}"
        elif isinstance(item, _NonFinite) or not _in_range(item):
            return path, "Not a finite number (NaN, Infinity or out of range)."
    return None


def _in_range(item) -> bool:
    if isinstance(item, float):
        return math.isfinite(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return abs(item) <= LARGEST_NUMBER
    return True


def _text_problem(text: str) -> str | None:
    if NUL in text:
        return "contains a NUL character (\\u0000)."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (an unpaired surrogate such as \\ud800)."
    return None


def _at(path: list[str], reason: str) -> dict:
    if not path:
        return {"_body": [reason]}
    fields: dict = {path[-1]: [reason]}
    for key in reversed(path[:-1]):
        fields = {key: fields}
    return fields
