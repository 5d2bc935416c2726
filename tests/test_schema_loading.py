"""schemas.loading: the intake's load of a valid payload without marshmallow's machinery returns
what `Schema.load` returns, and declines (returns None) everything marshmallow refuses, so every
error is still marshmallow's. Checked on every documented example and on variants of them with
each value changed, nulled or removed, under every event type's schema."""
from __future__ import annotations

import copy
import json

import pytest
from marshmallow import Schema, ValidationError, fields, post_load

from schemas.events import EVENTS
from schemas.loading import loader
from testbed.examples import FIXTURE_NAMES, load_fixture

VALUES = [None, "", "  x  ", " A@B.COM ", "a@b.co", "not an email", 5, 5.0, True, "true", [], {}, -1, 2**70,
          {"id": " 7 "}, {"id": 3, "email": "X@y.z"}, "\t"]
REMOVED = object()


def _places(value, at=()):
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*at, key)
            yield from _places(child, (*at, key))


def _variants(payload: dict):
    yield payload
    for place in list(_places(payload)):
        for value in [*VALUES, REMOVED]:
            changed = copy.deepcopy(payload)
            parent = changed
            for key in place[:-1]:
                parent = parent[key]
            if value is REMOVED:
                del parent[place[-1]]
            else:
                parent[place[-1]] = value
            yield changed
    for key in ("lead", "referral", "campaign", "subscriber", "referrer", "reward", "email", "something_new"):
        for value in VALUES:
            yield {**payload, key: value}


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_the_load_of_a_valid_payload_is_marshmallows_and_an_invalid_one_is_left_to_it(event_type):
    schema = EVENTS[event_type].schema
    load = loader(schema)
    loaded = declined_valid = 0
    for name in FIXTURE_NAMES:
        for payload in _variants(load_fixture(name)):
            try:
                expected = schema.load(payload)
            except ValidationError:
                expected = None
            got = load(payload)
            if got is not None:
                loaded += 1
                assert got == expected, json.dumps(payload)[:300]
                assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
            elif expected is not None:
                declined_valid += 1
    assert loaded > 100  # the loader did the work, not marshmallow
    assert declined_valid == 0  # every payload marshmallow accepts, the loader loads


def test_a_schema_with_a_hook_is_left_to_marshmallow():
    class Hooked(Schema):
        id = fields.String(required=True)

        @post_load
        def wrap(self, data, **_kwargs):
            return {"wrapped": data}

    assert loader(Hooked())({"id": "x"}) is None
    assert Hooked().load({"id": "x"}) == {"wrapped": {"id": "x"}}
