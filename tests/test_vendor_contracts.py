"""What Relay's clients send to Sprig and Spruce, and what the sandbox answers, against the
OpenAPI documents the vendors publish (openapi-core). The documents are the vendors', not
ours: they are read from ../shared/vendors/openapi/ and this module skips without them."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from relay.runtime import Runtime
from testbed.apps import deliveries, post_event, run_pending
from testbed.examples import FIXTURE_NAMES, WITHOUT_EXAMPLE, load_fixture
from testbed.exchanges import Exchange
from testbed.vendor_contracts import DOCUMENTS, problems
from workers.sprig.client import sprig_client
from workers.spruce.client import spruce_client

pytestmark = pytest.mark.skipif(not DOCUMENTS.is_dir(), reason="the vendors' OpenAPI documents are not here")


def test_every_request_and_answer_follows_the_vendors_documents(client, app, sandbox, recorded):
    for name in FIXTURE_NAMES:
        post_event(client, load_fixture(name))
    for event_type in WITHOUT_EXAMPLE:
        post_event(client, {"type": event_type, "campaign": {"id": "c_1"},
                            "subscriber": {"id": f"sub_{event_type}", "email": f"{event_type}@example.com"}})
    run_pending(app)
    # The rarer paths: Sprig's read-back after a lost answer; Spruce's answers to refusals.
    sandbox.configure(faults=[{"vendor": "sprig", "status": 500, "times": 1, "method": "POST",
                               "path_prefix": "/v2/users", "when": "after"},
                              {"vendor": "spruce", "status": 429, "times": 1, "path_prefix": "/contacts/search"}])
    payload = load_fixture("reward_unlocked")
    payload["subscriber"].update(id="sub_contract", email="contract@example.com")
    post_event(client, payload)
    run_pending(app, rounds=6, honour_waits=True)
    # The reads a delivery makes only now and then: a contact by id, a conversation's items.
    spruce = spruce_client(Runtime.of(app))
    note = next(d for d in deliveries(app) if "spruce.conversation" in (d.progress or {}))
    assert spruce.get_contact(note.progress["spruce.contact"])["id"] == note.progress["spruce.contact"]
    assert list(spruce.iter_conversation_items(note.progress["spruce.conversation"]))
    assert sprig_client(Runtime.of(app)).get_user("nobody@example.com") is None

    vendors_called = {urlsplit(e.url).path.split("/")[1] for e in recorded}
    assert {"sprig", "spruce"} <= vendors_called
    assert any(e.method == "GET" and "/v2/users/" in e.url for e in recorded)  # the read-back ran
    assert problems(recorded) == []


def test_the_check_finds_a_request_or_an_answer_the_documents_refuse():
    headers = {"content-type": "application/json", "authorization": "Bearer x"}
    refused = Exchange("POST", "http://127.0.0.1:1/spruce/v1/contacts", headers, b'{"category": 7}',
                       201, {"content-type": "application/json"}, b'{"id": "entity_1"}')
    [request, answer] = problems([refused])
    assert request.startswith("spruce request POST /spruce/v1/contacts -> 201: category: enum")
    assert answer.startswith("spruce response") and "'displayName' is a required property" in answer
