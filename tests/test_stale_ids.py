"""Stored Spruce ids that Spruce no longer has (staff deleted or merged the contact, or deleted
the note conversation): the delivery forgets them, finds or creates them again once, and posts
its note once. Against the sandbox over HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

import logging

import httpx
import pytest
import sqlalchemy as sa

from relay.models import DestinationLink
from relay.runtime import Runtime
from testbed import vendor_contracts as contracts
from testbed.apps import deliver, deliveries, delivery_to, events, post_event, run_pending, sandbox_state
from testbed.examples import load_fixture
from web.cli import main
from workers import identity
from workers.spruce.delivery import CONTACT, CONVERSATION

SPRUCE_AUTH = {"Authorization": "Bearer sandbox-spruce-token"}
EMAIL, NAME, SUBSCRIBER_ID = "john.doe@email.com", "John Doe", "sub_hjdgc74u"


def reward(referrals: int) -> dict:
    """John Doe's reward_unlocked at this many referrals: a distinct event for each count."""
    payload = load_fixture("reward_unlocked")
    payload["referrals"] = payload["reward"]["referrals"] = payload["subscriber"]["tot_referrals"] = referrals
    return payload


def spruce(sandbox) -> dict:
    return sandbox_state(sandbox)["spruce"]


def delete_contact(sandbox, contact_id: str) -> None:
    """As staff (or an integration) would through Spruce's API; its conversations go with it."""
    response = httpx.delete(f"{sandbox.spruce_url}/contacts/{contact_id}", headers=SPRUCE_AUTH, timeout=5)
    assert response.status_code == 200, response.text


def delete_conversation(sandbox, conversation_id: str) -> None:
    """As staff would in Spruce's app (its API has no such call)."""
    response = httpx.delete(f"{sandbox.url}/_sandbox/spruce/conversations/{conversation_id}", timeout=5)
    assert response.status_code == 200, response.text


def the_link(app) -> dict:
    """What Spruce remembers of John Doe (a new_referral also links its referrer, for Sprig)."""
    with Runtime.of(app).db.session() as session:
        return session.scalars(sa.select(DestinationLink.data).where(
            DestinationLink.subscriber_key == identity.id_key(SUBSCRIBER_ID),
            DestinationLink.destination == "spruce")).one()


def spruce_deliveries(app):
    return [d for d in deliveries(app) if d.destination == "spruce"]


def relay_posts(sandbox, path: str) -> list[str]:
    """The idempotency keys of Relay's POSTs to `path` (the tests' own carry none or test-…)."""
    return [r["idempotency_key"] for r in sandbox_state(sandbox)["requests"]
            if r["vendor"] == "spruce" and r["method"] == "POST" and r["path"] == path
            and (r["idempotency_key"] or "").startswith("relay-")]


def stale_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "relay.spruce" and r.levelno == logging.WARNING]


def assert_names_no_one(text: str) -> None:
    assert EMAIL not in text and NAME not in text and SUBSCRIBER_ID not in text


# --- the drill: deleted between two rewards -----------------------------------------------


@pytest.mark.parametrize("deleted", ["contact", "conversation"])
def test_a_record_staff_deleted_between_two_rewards_is_made_again_and_the_second_note_delivered(
        app, client, sandbox, caplog, deleted):
    assert post_event(client, reward(4)).status_code == 200
    run_pending(app)
    first = the_link(app)
    old_contact, old_conversation = first["contact_id"], first["note_conversation_id"]
    assert [len(items) for items in spruce(sandbox)["items"].values()] == [1]  # the first note
    if deleted == "contact":
        delete_contact(sandbox, old_contact)  # and with it the conversation
    else:
        delete_conversation(sandbox, old_conversation)

    assert post_event(client, reward(5)).status_code == 200
    with caplog.at_level(logging.WARNING, logger="relay.spruce"):
        run_pending(app)

    assert [e.status for e in events(app)] == ["done", "done"]
    second = spruce_deliveries(app)[-1]
    assert (second.status, second.attempts, second.last_error) == ("succeeded", 1, None)
    state = spruce(sandbox)
    [contact], [conversation] = state["contacts"], state["conversations"]
    assert (contact["id"] == old_contact) is (deleted == "conversation")
    assert conversation["id"] != old_conversation
    assert conversation["associatedContactIds"] == [contact["id"]]
    [note] = state["items"][conversation["id"]]  # the second reward's note, once
    assert note["isInternalNote"] is True
    link = the_link(app)
    assert link == {"contact_id": contact["id"], "note_conversation_id": conversation["id"]}
    assert second.progress[CONTACT] == contact["id"] and second.progress[CONVERSATION] == conversation["id"]
    # What was made again has a key of its own: the old one is still in Spruce's 24 h window.
    contact_keys, conversation_keys = relay_posts(sandbox, "/contacts"), relay_posts(sandbox, "/conversations")
    assert len(contact_keys) == (2 if deleted == "contact" else 1) == len(set(contact_keys))
    assert len(conversation_keys) == 2 == len(set(conversation_keys))
    [warning] = stale_warnings(caplog)
    assert f"delivery {second.id}:" in warning
    assert ("contact and note conversation ids" if deleted == "contact" else "note conversation id") in warning
    assert_names_no_one(warning)


def test_a_contact_merged_into_another_is_found_by_its_email_not_created_again(app, client, sandbox, caplog):
    assert post_event(client, load_fixture("new_referral")).status_code == 200
    run_pending(app)
    [duplicate] = spruce(sandbox)["contacts"]  # Relay knows only the contact so far
    kept = httpx.post(f"{sandbox.spruce_url}/contacts", headers={**SPRUCE_AUTH, "s-idempotency-key": "test-kept"},
                      json={"givenName": "John", "emailAddresses": [{"value": "jd@work.example"}]}, timeout=5).json()
    merged = httpx.post(f"{sandbox.url}/_sandbox/spruce/contacts/{duplicate['id']}/merge",
                        json={"into": kept["id"]}, timeout=5)
    assert merged.status_code == 200, merged.text

    assert post_event(client, reward(4)).status_code == 200
    with caplog.at_level(logging.WARNING, logger="relay.spruce"):
        run_pending(app)

    note = spruce_deliveries(app)[-1]
    assert (note.status, note.attempts) == ("succeeded", 1)
    state = spruce(sandbox)
    assert [c["id"] for c in state["contacts"]] == [kept["id"]]
    assert len(relay_posts(sandbox, "/contacts")) == 1  # only the first one, before the merge
    [conversation] = state["conversations"]
    assert conversation["associatedContactIds"] == [kept["id"]]
    assert len(state["items"][conversation["id"]]) == 1
    assert the_link(app)["contact_id"] == kept["id"]
    [warning] = stale_warnings(caplog)
    assert f"delivery {note.id}:" in warning and "stored contact id" in warning


# --- a delivery whose own progress holds the stale id ----------------------------------------


@pytest.mark.parametrize("again", ["retry", "replay"])
def test_a_retry_or_replay_whose_progress_holds_a_deleted_contact_recovers(app, client, sandbox, again):
    # The note's first post fails after the contact and conversation were recorded in progress:
    # a 500 is retried, a 400 fails the delivery until an operator replays it.
    status = 500 if again == "retry" else 400
    sandbox.configure(faults=[{"vendor": "spruce", "status": status, "times": 1, "method": "POST",
                               "path_prefix": "/conversations/"}])
    assert post_event(client, reward(4)).status_code == 200
    deliver(app, delivery_to(app, "spruce").id)
    stopped = delivery_to(app, "spruce")
    assert stopped.status == ("pending" if again == "retry" else "failed")
    delete_contact(sandbox, stopped.progress[CONTACT])
    if again == "replay":
        result = app.test_cli_runner().invoke(main, ["events", "replay", str(stopped.event_id), "--yes"])
        assert result.exit_code == 0, result.output

    run_pending(app)

    done = delivery_to(app, "spruce")
    assert done.status == "succeeded", done.last_error
    state = spruce(sandbox)
    [contact], [conversation] = state["contacts"], state["conversations"]
    assert contact["id"] != stopped.progress[CONTACT] and conversation["id"] != stopped.progress[CONVERSATION]
    assert done.progress[CONTACT] == contact["id"]
    assert len(state["items"][conversation["id"]]) == 1


# --- the note is never posted twice; a second 404 fails ------------------------------------


def test_a_note_that_landed_behind_a_404_answer_is_not_posted_again(app, client, sandbox, caplog):
    assert post_event(client, reward(4)).status_code == 200
    run_pending(app)
    # The next note lands, but its answer is a 404: Relay looks for the conversation again,
    # finds the same one, and the same idempotency key keeps a second copy out of it.
    sandbox.configure(faults=[{"vendor": "spruce", "status": 404, "times": 1, "method": "POST",
                               "path_prefix": "/conversations/", "when": "after"}])
    assert post_event(client, reward(5)).status_code == 200
    with caplog.at_level(logging.WARNING, logger="relay.spruce"):
        run_pending(app)

    note = spruce_deliveries(app)[-1]
    assert (note.status, note.attempts) == ("succeeded", 1)
    [conversation] = spruce(sandbox)["conversations"]
    assert len(spruce(sandbox)["items"][conversation["id"]]) == 2  # one per reward
    assert len(stale_warnings(caplog)) == 1


def test_a_second_404_for_what_replaced_the_stale_id_fails_saying_what_was_stale(app, client, sandbox, caplog):
    assert post_event(client, reward(4)).status_code == 200
    run_pending(app)
    sandbox.configure(faults=[{"vendor": "spruce", "status": 404, "times": None, "method": "POST",
                               "path_prefix": "/conversations/"}])
    assert post_event(client, reward(5)).status_code == 200
    with caplog.at_level(logging.WARNING, logger="relay.spruce"):
        run_pending(app)

    failed = spruce_deliveries(app)[-1]
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "note conversation" in failed.last_error and "not found either" in failed.last_error
    assert_names_no_one(failed.last_error)
    [warning] = stale_warnings(caplog)
    assert f"delivery {failed.id}:" in warning and "did not finish" in warning
    [conversation] = spruce(sandbox)["conversations"]
    assert len(spruce(sandbox)["items"][conversation["id"]]) == 1  # the first reward's only


# --- what the sandbox answers, against Spruce's published document ----------------------------


@pytest.mark.skipif(not contracts.DOCUMENTS.is_dir(), reason="the vendors' OpenAPI documents are not here")
def test_the_deletion_and_the_404s_follow_spruces_document(app, client, sandbox, recorded):
    assert post_event(client, reward(4)).status_code == 200
    run_pending(app)
    delete_contact(sandbox, the_link(app)["contact_id"])
    assert post_event(client, reward(5)).status_code == 200
    run_pending(app)

    assert [e.status for e in events(app)] == ["done", "done"]
    assert any(x.method == "DELETE" and x.status == 200 for x in recorded)
    assert 404 in [x.status for x in recorded if x.method == "GET" and x.url.endswith("/conversations")]
    # PostConversationMessage declares no 404 (Spruce documents none for a deleted
    # conversation): the sandbox answers one in Spruce's error format, as for a contact.
    [problem] = contracts.problems(recorded)
    assert problem.startswith("spruce response POST /spruce/v1/conversations/")
    assert problem.endswith("/messages -> 404: an answer the document does not list")
