"""relay.storable skips its walk over the decoded value when the body's bytes rule out everything
the walk looks for: for every body, refused or kept, the answer is the one the walk gives."""
from __future__ import annotations

import json

import pytest

from relay import storable
from sandbox import FIXTURES

SURROGATE_IN_UTF8 = "\ud800".encode("utf-8", "surrogatepass")
BODIES = [
    *(path.read_bytes() for path in sorted(FIXTURES.glob("*.json"))),
    b'{"type": "x", "name": "Jos\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac"}',  # UTF-8 beyond ASCII: kept
    b'{"type": "x", "n": 5.0, "m": 1e2, "f": 0.5, "neg": -12}',
    b'{"type": "x", "name": "Jane\\u0000Doe"}',
    b'{"type": "x", "a\\u0000b": 1}',
    b'{"type": "x", "name": "\\ud800 Doe"}',
    b'{"type": "x", "name": "\\\\u0000 is text"}',  # an escaped backslash: kept, by the walk
    b'{"type": "x", "name": "' + SURROGATE_IN_UTF8 + b'"}',  # json reads it with surrogatepass
    b'{"type": "x", "' + SURROGATE_IN_UTF8 + b'": 1}',
    '{"type": "x", "name": "Jane\x00Doe"}'.encode("utf-16"),  # with its byte order mark
    '{"type": "x", "name": "Jane\x00Doe"}'.encode("utf-16-le"),
    '{"type": "x", "name": "\ud800"}'.encode("utf-16-le", "surrogatepass"),
    '{"type": "x", "name": "\ud800"}'.encode("utf-32", "surrogatepass"),
    b"\xef\xbb\xbf" + b'{"type": "x", "a\\u0000": 1}',  # UTF-8 byte order mark
    b'{"type": "x", "r": NaN}',
    b'{"type": "x", "r": [1, -Infinity]}',
    b'{"type": "x", "r": 1e999}',
    b'{"type": "x", "r": -1e400}',
    b'{"type": "x", "r": ' + str(int(1.7976931348623157e308)).encode() + b"}",  # the largest: kept
    b'{"type": "x", "r": ' + str(int(1.7976931348623157e308) * 10).encode() + b"}",
    b'{"type": "x", "r": "' + b"9" * 400 + b'"}',  # digits in text: kept, by the walk
    b'{"type": "x", "deep": ' + b"[" * 32 + b"]" * 32 + b"}",
    b'{"type": "x", "deep": ' + b"[" * 31 + b"]" * 31 + b"}",
    b'{"type": "x", "text": "' + b"[" * 40 + b'"}',  # brackets in text: kept, by the walk
    b"[" * 40 + b"]" * 40,
]


def _walked(raw: bytes):
    """storable.loads as it was: the walk over every body."""
    try:
        value = json.loads(raw, parse_constant=lambda _: storable._NonFinite(), parse_float=storable._number)
    except ValueError:  # not JSON at all: refused before any walk, as before
        return "refused", None
    problem = storable.first_problem(value)
    return ("refused", problem) if problem else ("kept", value)


@pytest.mark.parametrize("raw", BODIES)
def test_a_body_is_kept_or_refused_as_the_walk_says(raw):
    try:
        loaded = ("kept", storable.loads(raw))
    except storable.NotStorable as refused:
        loaded = ("refused", refused.fields)
    expected = _walked(raw)
    assert loaded[0] == expected[0], (raw[:80], loaded, expected)
    if expected[0] == "kept":
        assert loaded[1] == expected[1]
        assert json.dumps(loaded[1]) == json.dumps(expected[1])  # 5.0 read as 5 either way
    elif expected[1] is not None:
        path, reason = expected[1]
        assert loaded[1] == storable._at(path, reason)


@pytest.mark.parametrize("raw", BODIES)
def test_the_bytes_rule_out_everything_the_walk_finds_but_numbers_the_decoding_reports(raw):
    if storable._nothing_to_refuse(raw):
        verdict, found = _walked(raw)
        assert verdict == "kept" or "finite" in found[1], raw[:80]
