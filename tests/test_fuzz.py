"""No input answers 5xx: random bodies and headers through the real endpoint, on both stores.
Every 400 names the field, every 401 says why, every 200 is stored and reaches a terminal
state at the vendors. CI runs a few hundred cases; bench/fuzz.py runs ten thousand and more."""
from __future__ import annotations

import os
from collections import Counter

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings

from relay import storable
from relay.models import Event
from schemas.events import raw_dedup_key
from tests.conftest import events, run_pending
from tests.payloads import bodies, headers
from web.cli import main
from relay.planning import plan_event

CASES = int(os.environ.get("RELAY_FUZZ_CASES", "80"))
TERMINAL = {"done", "failed", "invalid", "unhandled"}


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
    with app.extensions["relay.db"].session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Event).where(Event.dedup_key == key)) == 1


def test_no_input_answers_5xx_and_what_is_accepted_is_delivered(relay_app, sandbox):
    app = relay_app(RELAY_RETRY_MAX_ATTEMPTS="2")
    client = app.test_client()
    tally = Counter()

    @settings(max_examples=CASES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=bodies, header_set=headers)
    def post(body, header_set):
        raw = body.encode("utf-8", "surrogatepass")
        response = client.post("/webhooks/sparkloop", data=raw, headers=header_set)
        tally[check_answer(app, raw, response)] += 1

    post()
    run_pending(app, rounds=4)
    statuses = Counter(e.status for e in events(app))
    assert set(statuses) <= TERMINAL, statuses
    assert tally["200"] and tally["400"] and tally["401"], tally  # the cases reach every answer

    # What was accepted can be shown, and replayed.
    runner = app.test_cli_runner()
    for event in events(app):
        for args in (["events", "show", str(event.id)], ["events", "show", str(event.id), "--json", "--reveal"]):
            shown = runner.invoke(main, args)
            assert shown.exit_code == 0, (args, shown.output[-500:])
    replayed = runner.invoke(main, ["events", "replay", "--status", "failed", "--status", "invalid",
                                    "--status", "unhandled", "--force", "--yes"])
    assert replayed.exit_code == 0, replayed.output[-500:]
