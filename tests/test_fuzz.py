"""No input answers 5xx: random bodies and headers through the real endpoint, on both stores.
Every 400 names the field, every 401 says why, every 200 is stored and reaches a terminal
state at the vendors. CI runs a few hundred cases; bench/fuzz.py runs ten thousand and more."""
from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, given, settings

from testbed.apps import TERMINAL, events, run_pending
from testbed.payloads import bodies, check_answer, headers
from web.cli import main

CASES = int(os.environ.get("RELAY_FUZZ_CASES", "80"))


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
