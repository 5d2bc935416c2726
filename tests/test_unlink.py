"""`relay subscribers unlink`: drops what the destinations remember of one person (Spruce's ids,
Sprig's attribute versions, each in a row of its own), through the CLI runner, on SQLite and
PostgreSQL, Redis and the sandbox."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from relay.models import DestinationLink
from relay.runtime import Runtime
from testbed.apps import deliveries, post_event, run_pending, sandbox_state
from testbed.examples import load_fixture
from web.cli import main
from workers import identity

EMAIL, NAME, SUBSCRIBER_ID = "john.doe@email.com", "John Doe", "sub_hjdgc74u"


def unlink(app, *args):
    return app.test_cli_runner().invoke(main, ["subscribers", "unlink", *args])


def links(app) -> dict[str, tuple]:
    """Every link by key: (Spruce contact id, note conversation id, Sprig attribute versions)."""
    kept: dict[str, dict] = {}
    with Runtime.of(app).db.session() as session:
        for link in session.scalars(sa.select(DestinationLink)):
            kept.setdefault(link.subscriber_key, {})[link.destination] = link.data
    return {key: (data.get("spruce", {}).get("contact_id"), data.get("spruce", {}).get("note_conversation_id"),
                  data.get("sprig", {}).get("attribute_versions"))
            for key, data in kept.items()}


def rows(app) -> list[tuple[str, str]]:
    with Runtime.of(app).db.session() as session:
        return sorted(session.execute(sa.select(DestinationLink.subscriber_key, DestinationLink.destination)).all())


def johns(app) -> tuple:
    return links(app).get(identity.id_key(SUBSCRIBER_ID))


def names_no_one(output: str) -> bool:
    return EMAIL not in output and NAME not in output and SUBSCRIBER_ID not in output


@pytest.fixture
def delivered(app, client, sandbox):
    """John Doe's reward, delivered: his Spruce contact and conversation, his Sprig versions."""
    assert post_event(client, load_fixture("reward_unlocked")).status_code == 200
    run_pending(app)
    contact, conversation, versions = johns(app)
    assert contact and conversation and versions
    return app


def test_dry_run_says_what_would_go_and_changes_nothing(delivered):
    before = links(delivered)

    result = unlink(delivered, EMAIL.upper(), "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Links of person-")
    assert ("would drop: Sprig attribute versions, Spruce contact id, Spruce note conversation id"
            in result.output)
    assert "dry run: nothing changed" in result.output
    assert names_no_one(result.output)
    assert links(delivered) == before


def test_unlinking_spruce_makes_the_next_note_find_the_same_contact_and_conversation(delivered, client, sandbox):
    _, _, versions = johns(delivered)
    [contact] = sandbox_state(sandbox)["spruce"]["contacts"]

    result = unlink(delivered, SUBSCRIBER_ID, "--destination", "spruce")

    assert result.exit_code == 0, result.output
    assert "dropped: Spruce contact id, Spruce note conversation id\n" in result.output
    assert "looks the contact up by email" in result.output and names_no_one(result.output)
    assert johns(delivered) == (None, None, versions)  # Sprig's memory stays
    assert rows(delivered) == [(identity.id_key(SUBSCRIBER_ID), "sprig")]  # Spruce's row went

    assert post_event(client, load_fixture("reward_redeemed")).status_code == 200
    run_pending(delivered)
    assert {d.status for d in deliveries(delivered)} == {"succeeded"}
    spruce = sandbox_state(sandbox)["spruce"]
    assert [c["id"] for c in spruce["contacts"]] == [contact["id"]]  # found by email, not created
    [conversation] = spruce["conversations"]  # found among the contact's, not created
    assert len(spruce["items"][conversation["id"]]) == 2
    assert johns(delivered)[:2] == (contact["id"], conversation["id"])


def test_unlinking_sprig_drops_the_attribute_versions_only(delivered):
    contact, conversation, _ = johns(delivered)

    result = unlink(delivered, EMAIL, "--destination", "sprig")

    assert result.exit_code == 0, result.output
    assert "dropped: Sprig attribute versions\n" in result.output
    assert "sends every attribute" in result.output
    assert johns(delivered) == (contact, conversation, None)
    assert rows(delivered) == [(identity.id_key(SUBSCRIBER_ID), "spruce")]


def test_unlinking_everything_removes_the_link_and_a_second_run_finds_nothing_to_drop(delivered):
    first = unlink(delivered, EMAIL)
    assert first.exit_code == 0, first.output
    assert "dropped: Sprig attribute versions, Spruce contact id, Spruce note conversation id" in first.output
    assert johns(delivered) is None

    second = unlink(delivered, EMAIL)

    assert second.exit_code == 0, second.output  # known (his events name him), nothing left to drop
    assert "none kept: nothing to drop" in second.output


def test_an_unknown_person_is_a_clear_error(app):
    result = unlink(app, "nobody@example.com")

    assert result.exit_code == 1
    assert "knows no subscriber person-" in result.output and "nobody@example.com" not in result.output


@pytest.mark.parametrize("args, message", [
    (["not an id"], "neither an email nor a subscriber id"),
    (["a@b"], "is not an email address"),
    ([EMAIL, "--destination", "sparkloop"], "'sparkloop' remembers nothing of subscribers (choose from sprig, spruce)"),
])
def test_bad_input_is_a_usage_error_that_quotes_no_email(app, args, message):
    result = unlink(app, *args)

    assert result.exit_code == 2
    assert message in result.output and EMAIL not in result.output.replace(f"{EMAIL}'", "")
