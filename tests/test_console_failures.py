"""The console's Failures page: failed deliveries grouped by cause (destination, vendor status,
kind, first words of the error), each group's replay behind a confirmation that shows the dry
run's estimate, the replay itself (operators only, CSRF, audited as the console's actor) of
exactly that group's failed deliveries, and its progress until done; the same group replayed by
`relay events replay --failure-group`. Through Flask's test client on the real store (SQLite and
PostgreSQL), Redis and the sandbox, whose faults make Spruce fail."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

import operations.failures
import web.console.failures
from operations import audit
from operations.failures import CAUSE_WORDS, FailureGroup
from relay.models import AuditEntry
from relay.runtime import Runtime
from schemas.personal import personal_strings
from testbed.apps import deliveries, events, post_event, run_pending
from testbed.cli import invoke
from testbed.console import token_of
from testbed.examples import load_fixture
from testbed.privacy import leaked

OPERATOR = "operator@example.org"


def post_unlocks(app, first: int, count: int) -> list[dict]:
    """`count` reward_unlocked events, each for another subscriber."""
    payloads = []
    for n in range(first, first + count):
        payload = load_fixture("reward_unlocked")
        payload["subscriber"].update(id=f"sub_failure{n}", email=f"failure{n}@example.com")
        assert post_event(app.test_client(), payload).status_code == 200
        payloads.append(payload)
    return payloads


def fail_spruce(sandbox, status: int) -> None:
    sandbox.configure(faults=[{"vendor": "spruce", "status": status, "times": None, "method": "POST",
                               "path_prefix": "/contacts"}])


def spruce_statuses(app) -> dict[int, str]:
    """Each event's Spruce delivery's status, by event id."""
    return {d.event_id: d.status for d in deliveries(app) if d.destination == "spruce"}


def text_of(answer) -> str:
    """A page's text, tags removed and entities read, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", answer.get_data(as_text=True))).split())


def replay_buttons(page: str) -> list[tuple[str, dict]]:
    """Each group's replay button on the Failures page: its text and its form's fields."""
    found = []
    for form in re.findall(r'<form method="get" action="/console/failures/replay">(.*?)</form>', page, re.S):
        fields = {name: html.unescape(value) for name, value in re.findall(r'name="(\w+)" value="([^"]*)"', form)}
        found.append((re.search(r"<button[^>]*>([^<]+)</button>", form).group(1), fields))
    return found


def replay_entries(app) -> list[AuditEntry]:
    with Runtime.of(app).db.session() as session:
        return list(session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "events.replay")))


def fail_for_two_causes(app, sandbox) -> tuple[list[int], list[int], list[dict]]:
    """Spruce refuses three events' contacts with a 400, then another's with a 422: two groups.
    Their event ids (the 400s, the 422), and the payloads."""
    fail_spruce(sandbox, 400)
    payloads = post_unlocks(app, 0, 3)
    run_pending(app)
    fail_spruce(sandbox, 422)
    payloads += post_unlocks(app, 3, 1)
    run_pending(app)
    ids = [e.id for e in events(app)]
    assert set(spruce_statuses(app).values()) == {"failed"}
    return ids[:3], ids[3:], payloads


def test_failures_are_grouped_by_cause_and_one_group_is_replayed_until_done(console_app, operator, sandbox):
    refused, other, payloads = fail_for_two_causes(console_app, sandbox)
    page = operator.get("/console/failures")
    assert page.status_code == 200
    shown = text_of(page)
    assert "Deliveries that failed since" in shown and "the last 7 days" in shown and "it read 4" in shown
    buttons = replay_buttons(page.get_data(as_text=True))
    # Newest group first: the 422, then the 400s.
    assert [text for text, _ in buttons] == ["Replay 1 delivery", "Replay 3 deliveries"]
    newest, oldest = (FailureGroup.parse(fields["group"], ["spruce", "sprig"]) for _, fields in buttons)
    assert (newest.destination, newest.status, newest.kind) == ("spruce", 422, "refused")
    assert (oldest.destination, oldest.status, oldest.kind) == ("spruce", 400, "refused")
    assert oldest.cause.startswith("POST /contacts/search -> 400") and "[req" not in oldest.cause
    assert "refused by the vendor" in shown
    assert f'href="/console/events/{refused[-1]}"' in page.get_data(as_text=True)  # its newest failure
    assert not [value for value in personal_strings(payloads[0]) if leaked(value, page.get_data(as_text=True))]

    confirmation = operator.get("/console/failures/replay", query_string=buttons[1][1])
    assert confirmation.status_code == 200
    said = text_of(confirmation)
    assert "Would replay 3 deliveries of 3 events" in said
    assert re.search(r"spruce 15 about \d+s 1000 per 1 s", said), said  # at most five calls a note
    assert "Confirm replay" in said
    assert spruce_statuses(console_app) == dict.fromkeys(refused + other, "failed")  # a look changes nothing

    done = operator.post("/console/failures/replay", data={**buttons[1][1], "csrf_token": token_of(confirmation.data)})
    assert done.status_code == 303
    progress_url = urlsplit(done.headers["Location"]).path
    assert spruce_statuses(console_app) == {**dict.fromkeys(refused, "pending"), other[0]: "failed"}
    [entry] = replay_entries(console_app)
    assert progress_url == f"/console/failures/replays/{entry.id}"
    assert (entry.actor, entry.interface, entry.outcome) == (OPERATOR, "console", "ok")
    assert entry.details["failure_group"] == oldest.text and entry.targets["events"] == refused
    replayed = {d.id for d in deliveries(console_app) if d.event_id in refused and d.destination == "spruce"}
    assert set(entry.targets["deliveries"]) == replayed

    going = operator.get(progress_url)
    assert going.status_code == 200
    assert '<meta http-equiv="refresh" content="2">' in going.get_data(as_text=True)
    assert "Pending 3" in text_of(going) and "Done" not in text_of(going)

    sandbox.configure(faults=[])
    run_pending(console_app)
    finished = operator.get(progress_url)
    assert "http-equiv" not in finished.get_data(as_text=True)
    assert "Done" in text_of(finished) and "none of the 3 replayed deliveries is pending or in flight" in text_of(finished)
    assert "Succeeded 3" in text_of(finished) and "Failed again 0" in text_of(finished)
    assert spruce_statuses(console_app) == {**dict.fromkeys(refused, "succeeded"), other[0]: "failed"}

    assert [text for text, _ in replay_buttons(operator.get("/console/failures").get_data(as_text=True))] == [
        "Replay 1 delivery"]
    again = operator.get("/console/failures/replay", query_string=buttons[1][1])
    assert "Nothing to replay" in text_of(again) and "Confirm replay" not in text_of(again)


def test_progress_counts_every_replayed_delivery_not_only_those_the_audit_entry_lists(
        console_app, operator, sandbox, monkeypatch):
    fail_for_two_causes(console_app, sandbox)
    monkeypatch.setattr(audit, "MAX_IDS", 1)
    [(_, fields)] = [b for b in replay_buttons(operator.get("/console/failures").get_data(as_text=True))
                     if b[0] == "Replay 3 deliveries"]
    confirmation = operator.get("/console/failures/replay", query_string=fields)
    done = operator.post("/console/failures/replay", data={**fields, "csrf_token": token_of(confirmation.data)})
    [entry] = replay_entries(console_app)
    assert len(entry.targets["deliveries"]) == 1 and entry.details["deliveries_total"] == 3
    assert "Pending 3" in text_of(operator.get(done.headers["Location"]))


def test_a_viewer_sees_the_groups_without_replay_buttons_and_cannot_replay(console_app, viewer, sandbox):
    fail_for_two_causes(console_app, sandbox)
    page = viewer.get("/console/failures")
    assert page.status_code == 200
    assert "Replay" not in text_of(page) and "refused by the vendor" in text_of(page)
    group = FailureGroup("spruce", 400, "refused", "x").text
    forged = viewer.post("/console/failures/replay",
                         data={"group": group, "csrf_token": token_of(page.data)})
    assert forged.status_code == 403 and "may look but not act" in text_of(forged)
    assert set(spruce_statuses(console_app).values()) == {"failed"}
    assert replay_entries(console_app) == []


def test_a_replay_without_the_csrf_token_is_refused(console_app, operator, sandbox):
    fail_for_two_causes(console_app, sandbox)
    [(_, fields), _] = replay_buttons(operator.get("/console/failures").get_data(as_text=True))
    refused = operator.post("/console/failures/replay", data=fields)
    assert refused.status_code == 403 and "security token" in text_of(refused)
    assert set(spruce_statuses(console_app).values()) == {"failed"}
    assert replay_entries(console_app) == []


def test_the_cli_replays_the_same_group(console_app, operator, sandbox):
    refused, other, _ = fail_for_two_causes(console_app, sandbox)
    [(_, newest), _] = replay_buttons(operator.get("/console/failures").get_data(as_text=True))
    result = invoke(console_app, "events", "replay", "--failure-group", newest["group"], "--yes")
    assert result.exit_code == 0, result.output
    assert "replayed 1 deliveries of 1 events" in result.output
    assert spruce_statuses(console_app) == {**dict.fromkeys(refused, "failed"), other[0]: "pending"}
    [entry] = replay_entries(console_app)
    assert (entry.interface, entry.details["failure_group"]) == ("cli", newest["group"])

    wrong = invoke(console_app, "events", "replay", "--failure-group", "spruce 400 refused")
    assert wrong.exit_code == 2 and "a failure group reads DESTINATION STATUS KIND: WORDS" in wrong.output


BAD_GROUPS = [
    ({}, "The group parameter is missing"),
    ({"group": "nonsense"}, "a failure group reads DESTINATION STATUS KIND: WORDS"),
    ({"group": "nowhere 400 refused: POST /x"}, "destination is not one of"),
    ({"group": "spruce 4000 refused: POST /x"}, "status is an HTTP status"),
    ({"group": "spruce 400 grumpy: POST /x"}, "kind is one of refused, retries-spent"),
    ({"group": "spruce 400 refused: " + " ".join(["word"] * (CAUSE_WORDS + 1))}, f"first {CAUSE_WORDS} at most"),
    ({"group": "spruce 400 refused: POST /x", "since": "yesterday"}, "since is a date and time"),
    ({"group": "spruce 400 refused: POST /x", "since": "2026-12-01T09:30:00"}, "since needs its offset"),
]


def test_a_bad_group_gets_a_page_naming_the_problem(console_app, operator):
    for query, problem in BAD_GROUPS:
        answer = operator.get("/console/failures/replay", query_string=query)
        assert answer.status_code == 400 and problem in text_of(answer), (query, text_of(answer))


def test_a_bad_window_or_an_unknown_replay_gets_a_page_naming_the_problem(console_app, operator):
    bad_days = operator.get("/console/failures?days=5")
    assert bad_days.status_code == 400 and "days is one of 1, 7, 30" in text_of(bad_days)
    unknown = operator.get("/console/failures/replays/999")
    assert unknown.status_code == 404 and "Audit entry 999 records no replay" in text_of(unknown)
    signed_in = audit.list_entries(Runtime.of(console_app), audit.AuditFilter(action="console.sign-in"), 1)
    assert signed_in, "the operator's sign-in is audited"
    not_a_replay = operator.get(f"/console/failures/replays/{signed_in[0]['id']}")
    assert not_a_replay.status_code == 404 and "records no replay" in text_of(not_a_replay)


def test_an_empty_store_has_no_failures_and_a_gone_group_nothing_to_replay(console_app, operator):
    assert "No delivery failed in the last 30 days" in text_of(operator.get("/console/failures?days=30"))
    gone = operator.get("/console/failures/replay", query_string={"group": "spruce 400 refused: POST /contacts"})
    assert gone.status_code == 200 and "Nothing to replay" in text_of(gone)
    posted = operator.post("/console/failures/replay", data={"group": "spruce 400 refused: POST /contacts",
                                                             "csrf_token": token_of(gone.data)})
    assert posted.status_code == 303 and urlsplit(posted.headers["Location"]).path == "/console/failures/replay"
    assert replay_entries(console_app) == []  # nothing replayed, nothing audited


def test_the_page_says_when_it_read_only_the_newest_failures(console_app, operator, sandbox, monkeypatch):
    fail_for_two_causes(console_app, sandbox)
    monkeypatch.setattr(operations.failures, "SCAN_LIMIT", 2)
    monkeypatch.setattr(web.console.failures, "SCAN_LIMIT", 2)
    page = operator.get("/console/failures")
    assert "More than 2 deliveries failed in this window" in text_of(page)
    # The newest two: the 422, then the newest 400; the confirmation counts all three 400s.
    buttons = replay_buttons(page.get_data(as_text=True))
    assert [text for text, _ in buttons] == ["Replay 1 delivery", "Replay 1 delivery"]
    confirmation = operator.get("/console/failures/replay", query_string=buttons[1][1])
    assert "Would replay 3 deliveries of 3 events" in text_of(confirmation)


def test_a_large_group_is_estimated_from_a_sample_and_replayed_whole(console_app, operator, sandbox, monkeypatch):
    refused, _, _ = fail_for_two_causes(console_app, sandbox)
    monkeypatch.setattr(operations.failures, "ESTIMATE_EVENTS", 2)
    [_, (_, fields)] = replay_buttons(operator.get("/console/failures").get_data(as_text=True))
    confirmation = operator.get("/console/failures/replay", query_string=fields)
    said = text_of(confirmation)
    assert "Estimated from a dry run of 2 of the group's 3 events" in said
    assert "Would replay 3 deliveries of 3 events" in said and re.search(r"spruce 15 about", said), said
    operator.post("/console/failures/replay", data={**fields, "csrf_token": token_of(confirmation.data)})
    assert [status for event_id, status in spruce_statuses(console_app).items() if event_id in refused] == [
        "pending"] * 3


@pytest.mark.parametrize("status, error, kind, cause", [
    (400, "POST /contacts -> 400 invalid_request: emailAddresses[0] is not a valid email address [req 8f3a]",
     "refused", "POST /contacts -> 400 invalid_request: emailAddresses[0] is not a valid"),
    (503, "gave up after 5 failed attempts: POST /contacts/search -> 503: Service Unavailable [req 1b]",
     "retries-spent", "POST /contacts/search -> 503: Service Unavailable"),
    (503, "gave up after 24.1 h: POST /contacts/search -> 503: Service Unavailable [req 2c]", "too-old",
     "POST /contacts/search -> 503: Service Unavailable"),
    (None, "PUT /v2/users/{userId} -> network error: ConnectError", "network",
     "PUT /v2/users/{userId} -> network error: ConnectError"),
    (None, "payload has no subscriber email to find the Spruce contact by", "relay",
     "payload has no subscriber email to find the Spruce contact"),
    (None, None, "relay", "(no error recorded)"),
])
def test_a_failure_s_group_is_its_kind_and_first_words_without_the_request_id(status, error, kind, cause):
    group = FailureGroup.of("spruce", status, error)
    assert (group.kind, group.cause) == (kind, cause)
    assert FailureGroup.parse(group.text, ["spruce"]) == group


def test_errors_that_differ_only_after_their_first_words_or_in_their_request_id_are_one_group():
    error = "POST /contacts -> 400 invalid_request: emailAddresses[0] is not a valid email address [req 8f3a]"
    group = FailureGroup.of("spruce", 400, error)
    assert FailureGroup.of("spruce", 400, "POST /contacts  -> 400 invalid_request: emailAddresses[0] is not a "
                                          "valid phone number [req 77b1]") == group
    assert FailureGroup.of("spruce", 400, "gave up after 5 failed attempts: " + error) != group  # another kind
    assert FailureGroup.of("spruce", 422, error) != group and FailureGroup.of("sprig", 400, error) != group
