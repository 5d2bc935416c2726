"""Hypothesis strategies for what a sender may post to the webhook: random JSON trees, random
mutations of every documented example (types swapped, fields dropped or duplicated, huge
strings, unicode edge cases, deep nesting, NaN and Infinity), and random header sets. Bodies
are bytes written by hand, so they can hold what json.dumps never writes: duplicate keys,
NaN, lone surrogates, NUL escapes, numbers that overflow. And what the endpoint promises for each (`check_answer`)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from hypothesis import strategies as st

from relay import storable
from relay.models import Event
from relay.planning import plan_event
from relay.runtime import Runtime
from schemas.events import EVENTS, raw_dedup_key
from testbed.apps import TOKEN
from testbed.examples import FIXTURE_NAMES, load_fixture

EDGE_TEXT = [
    "",
    " ",
    "\u0000",
    "a\u0000b",
    "\ud800",
    "\udfff Doe",
    "\ufeff",
    "\u202e",
    "é",
    "😀",
    "\\",
    '"',
    "x" * 5000,
    "line\nbreak",
    "John Doe ",
    "JOHN.DOE@EMAIL.COM",
]
EDGE_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e-999",
    "0",
    "-0",
    "123456789012345678901234567890",
    "1.5",
    "true",
    "false",
    "null",
]


class Raw(str):
    """JSON text to be written as is (a literal json.dumps would not write)."""


def encode(value) -> str:
    """JSON text for `value`, with Raw pieces verbatim and dict items as (key, value) pairs so
    that keys can repeat."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{encode(k)}:{encode(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return encode(Pairs(value.items()))
    if isinstance(value, list):
        return "[" + ",".join(encode(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value)


class Pairs(list):
    """An object's items, in order, keys possibly repeated."""


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(EDGE_TEXT),
    st.sampled_from(EDGE_NUMBERS).map(Raw),
    st.sampled_from([r'"\u0000"', r'"\ud800"', r'"a\udfffb"']).map(Raw),  # escapes json.dumps never writes
)
keys = st.one_of(
    st.sampled_from(
        [
            "type",
            "subscriber",
            "email",
            "id",
            "name",
            "reward",
            "referrer",
            "campaign_id",
            "shipping_details",
            "lead",
            "campaign",
        ]
    ),
    st.text(max_size=12),
    st.sampled_from(EDGE_TEXT[:8]),
)
json_trees = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=20,
)


def deeply_nested(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


@st.composite
def mutated_examples(draw) -> str:
    """A documented example, or a payload of a type without one, with a few random changes."""
    name = draw(st.sampled_from([*FIXTURE_NAMES, *sorted(EVENTS)]))
    payload = (
        load_fixture(name)
        if name in FIXTURE_NAMES
        else {"type": name, "subscriber": {"id": "sub_1", "email": "jane@example.com", "referral_status": "pending"}}
    )
    for _ in range(draw(st.integers(0, 3))):
        payload = _mutate(draw, payload)
    return encode(payload)


def _mutate(draw, payload):
    paths = list(_paths(payload))
    path = draw(st.sampled_from(paths))
    action = draw(st.sampled_from(["replace", "drop", "duplicate", "nest", "add"]))
    parent, key = _parent(payload, path)
    if parent is None:
        return draw(json_trees) if action == "replace" else payload
    if action == "replace":
        parent[key] = draw(st.one_of(json_trees, st.sampled_from([deeply_nested(40), deeply_nested(3000)])))
    elif action == "drop" and isinstance(parent, dict):
        del parent[key]
    elif action == "duplicate" and isinstance(parent, dict):  # the same key twice, the second other
        items = Pairs(parent.items())
        items.append((key, draw(json_trees)))
        return _replace(payload, path[:-1], items)
    elif action == "nest":
        parent[key] = [[{"k": parent[key]}]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(keys)] = draw(json_trees)
    return payload


def _paths(value, path=()):
    yield path
    if isinstance(value, dict) and not isinstance(value, Pairs):
        for key, child in value.items():
            yield from _paths(child, (*path, key))
    elif isinstance(value, list) and not isinstance(value, Pairs):
        for index, child in enumerate(value):
            yield from _paths(child, (*path, index))


def _parent(payload, path):
    if not path:
        return None, None
    node = payload
    for step in path[:-1]:
        node = node[step]
    return node, path[-1]


def _replace(payload, path, new):
    if not path:
        return new
    parent, key = _parent(payload, path)
    parent[key] = new
    return payload


bodies = st.one_of(
    mutated_examples(),
    mutated_examples(),
    mutated_examples(),
    mutated_examples(),
    json_trees.map(encode),
    st.dictionaries(keys, json_trees, max_size=6).map(lambda d: encode({"type": "new_referral", **d})),
    st.sampled_from([deeply_nested(50_000), Raw("{" * 10), Raw("not json"), Raw("")]),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)

headers = st.fixed_dictionaries(
    {"SparkLoop-Token": st.sampled_from([TOKEN] * 9 + ["wrong", "", TOKEN + " "])},
    optional={
        "Content-Type": st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1", ""]),
        "Content-Encoding": st.sampled_from(["gzip", "identity"]),
        "X-Forwarded-For": st.just("203.0.113.9"),
    },
)


def check_answer(app, body: bytes, response) -> str:
    """Assert what the endpoint promises for one post; return the outcome's name."""
    status = response.status_code
    assert status < 500, (status, response.data[:300], body[:300])
    if status == 200:
        assert response.data == b""
        assert stored(app, body), body[:300]
        return "200"
    answer = response.get_json()
    assert isinstance(answer, dict) and answer.get("error"), (status, response.data[:300])
    if status == 400:
        assert answer.get("fields"), answer  # names the field (or `_body`)
    else:
        assert status in (401, 413), (status, answer)
    return str(status)


def stored(app, body: bytes) -> bool:
    """The event this body is, by its key: new or a duplicate of one stored before. Read as the
    endpoint reads it (a whole number written 5.0 is the integer 5)."""
    payload = storable.loads(body)
    key = plan_event(payload, app.config["RELAY"]).key or raw_dedup_key(body)
    with Runtime.of(app).db.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Event).where(Event.dedup_key == key)) == 1
