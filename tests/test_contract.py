"""The published contract: schemathesis against GET /openapi.json, in process (its WSGI
transport) on the real web app and both stores, with every check it has and its examples,
coverage and fuzzing phases, a fixed seed and a few cases per phase (bench/fuzz.py runs it
at full size), on PostgreSQL: the run is CPU-bound (about 15 s a store on a quiet 2-core
machine, several times that beside the rest of the suite), and the two stores differ only in
the intake's statement, which tests/test_webhook.py and tests/test_fuzz.py hold to the same
answers on both. Its checks include what the document promises in both directions: a body the
schema calls valid is accepted, one it calls invalid is refused, and an undeclared method is
answered 405 with `Allow`. The cases below are the ones schemathesis found before the
document said what Relay refuses, and each edge of what it now says."""
from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from relay.storable import LARGEST_NUMBER
from testbed.apps import TOKEN, post_event
from testbed.examples import load_fixture
from testbed.services import empty_postgres
from web.openapi import openapi_document

CASES = 20  # per operation and phase; bench/fuzz.py: hundreds
# CPU-bound, so its time is set by what runs beside it: 103 s of a quiet suite's run, over the
# suite's 120 s limit in one CI run beside the drills.
pytestmark = pytest.mark.timeout(300)
SEED = 16

CONFIG = {
    "seed": SEED,
    "headers": {"SparkLoop-Token": TOKEN},
    "checks": {"enabled": True},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
    "generation": {"max-examples": CASES, "database": "none", "deterministic": True},
}


def contract_config(**changes) -> schemathesis.Config:
    return schemathesis.Config.from_dict({**CONFIG, **changes})


class ServedApp:
    """The WSGI app schemathesis sends every case and probe to: the one the running test built."""

    current = None

    def __call__(self, environ, start_response):
        return self.current(environ, start_response)


# The tests are generated at collection from the document the app serves (`served` checks that
# it is the same), so the app they run against is chosen per test: one per store.
DOCUMENT = json.loads(json.dumps(openapi_document()))
schema = schemathesis.openapi.from_dict(DOCUMENT, config=contract_config())
schema.app = ServedApp()


@pytest.fixture
def database_url(postgres_url):
    """PostgreSQL alone (conftest's runs every app test on both stores)."""
    empty_postgres(postgres_url)
    return postgres_url


@pytest.fixture
def served(relay_app):
    app = relay_app()
    assert app.test_client().get("/openapi.json").get_json() == DOCUMENT
    schema.app.current = app
    yield app
    schema.app.current = None


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # one app for all the cases, on purpose
def test_relay_keeps_its_published_contract(case, served):
    case.call_and_validate()


def _with(name: str, path: str, value) -> bytes:
    """The documented example `name` with the field at `path` (dotted) set to `value`, as JSON text."""
    payload = load_fixture(name)
    *parents, last = path.split(".")
    target = payload
    for key in parents:
        target = target[key]
    target[last] = value
    return json.dumps(payload).encode()


VALIDATOR = Draft202012Validator(
    {"$ref": "urn:relay#/paths/~1webhooks~1sparkloop/post/requestBody/content/application~1json/schema"},
    registry=Registry().with_resource("urn:relay", Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)))


@pytest.mark.parametrize("body, accepted", [
    (b'{"type": "AAA"}', True),  # any other type: stored as unhandled, so SparkLoop does not retry
    (b'{"type": "AAA", "a\\u0000b": 1}', False),  # the store keeps no NUL, in a key either
    (_with("new_referral", "referrer.x\u0000", [False]), False),
    (_with("new_referral", "referrer.name", "Jane\u0000"), False),
    (b'{"type": " \\u3000"}', False),  # blank
    (json.dumps({"type": "x" * 101}).encode(), False),
    (_with("new_referral", "subscriber.id", " \t"), False),  # a required id is trimmed first
    (_with("new_referral", "subscriber.referred", "yes"), True),  # marshmallow's words for a boolean
    (_with("new_referral", "subscriber.referred", "maybe"), False),
    (_with("new_referral", "subscriber.tot_referrals", 5.0), True),  # 5.0 is the integer 5
    (_with("new_referral", "subscriber.tot_referrals", 5.5), False),
    (_with("new_referral", "subscriber.tot_referrals", 10 ** 400), False),  # beyond a double
    (_with("new_referral", "subscriber.tot_referrals", LARGEST_NUMBER), True),  # the bound: a double's largest
    (_with("new_referral", "subscriber.tot_referrals", -LARGEST_NUMBER - 1), False),
    (_with("new_referral", "subscriber.tot_referrals", 1.7976931348623157e308), True),
    (b'{"type": "sync_subscriber", "subscriber": {"id": 7}}', True),  # an id: a string or an integer
    (b'{"type": "sync_subscriber", "subscriber": {"id": [7]}}', False),
])
def test_the_document_says_what_relay_accepts_and_refuses(bare_app, body, accepted):
    assert VALIDATOR.is_valid(json.loads(body)) is accepted
    answer = post_event(bare_app().test_client(), body)
    assert answer.status_code == (200 if accepted else 400), answer.get_json()
