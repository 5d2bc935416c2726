"""The console's Events list and Event page: filters from the URL, email search by digest (the
email in no URL), keyset paging, every attempt of each delivery, the payload masked unless an
operator reveals it (audited), replay after a confirmation, and what a viewer may not do.
Through Flask's test client, on SQLite and PostgreSQL, Redis and the sandbox."""
from __future__ import annotations

import html
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from operations.audit import AuditFilter, list_entries
from operations.events import event_detail
from relay.models import Delivery, Event, utcnow
from relay.runtime import Runtime
from relay.subjects import email_digest
from schemas.personal import personal_strings
from testbed.apps import deliveries, delivery_to, events, post_event, received_days_ago, run_pending, sandbox_state
from testbed.console import post_form, token_of
from testbed.examples import load_fixture
from testbed.privacy import leaked
from workers.spruce.delivery import NOTE

NOTE_POST = {"vendor": "spruce", "method": "POST", "path_prefix": "/conversations/t_", "times": 1}
SPRUCE_REFUSES = {"vendor": "spruce", "status": 400, "times": None, "method": "POST", "path_prefix": "/contacts"}
EVENT_LINK = re.compile(r'href="/console/events/(\d+)"')


def listed(client, query: str = "") -> list[int]:
    """The event ids the Events page lists (in its order) for this query string."""
    page = client.get(f"/console/events{query}")
    assert page.status_code == 200, page.data
    return [int(found) for found in EVENT_LINK.findall(page.text)]


def link(page_text: str, name: str) -> str | None:
    """The href of the link named `name` on the page, or None."""
    found = re.search(rf'<a href="([^"]+)">{name}</a>', page_text)
    return html.unescape(found.group(1)) if found else None


def table_rows(page_text: str) -> list[list[str]]:
    """The body rows of the page's tables, each as its cells' text."""
    return [[" ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell)).split()) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", page_text, re.S) if "<td" in row]


def words(page_text: str) -> str:
    """The page's text, tags removed, spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page_text)).split())


def posted(client, payload: dict) -> int:
    assert post_event(client, payload).status_code == 200
    return events(client.application)[-1].id


def with_subscriber(name: str, subscriber_id: str, email: str) -> dict:
    payload = load_fixture(name)
    payload["subscriber"].update(id=subscriber_id, email=email)
    return payload


def test_the_list_shows_posted_events_with_each_destinations_outcome(console_app, viewer):
    intake = console_app.test_client()
    referral = posted(intake, load_fixture("new_referral"))
    sync = posted(intake, load_fixture("sync_subscriber"))  # Sprig's only
    run_pending(console_app)

    page = viewer.get("/console/events")

    assert page.status_code == 200
    assert listed(viewer) == [sync, referral]  # newest first
    destinations = list(Runtime.of(console_app).destinations)
    headers = re.findall(r'<th scope="col">([^<]+)</th>', page.text)
    assert headers == ["Event", "Type", "Received (UTC)", "Status", *destinations]  # a column each, from the registry
    received = {e.id: e.received_at.strftime("%Y-%m-%d %H:%M:%S") for e in events(console_app)}
    assert table_rows(page.text) == [
        [str(sync), "sync_subscriber", received[sync], "done", *("succeeded" if d == "sprig" else "–" for d in destinations)],
        [str(referral), "new_referral", received[referral], "done", *["succeeded"] * len(destinations)],
    ]
    for name in ("Status", "Type", "Destination", "Received after", "Received before", "Search by email"):
        assert re.search(rf'<label for="[^"]+">{name}</label>', page.text), name
    assert "<button type=\"submit\">Apply</button>" in page.text


def test_each_filter_narrows_the_list(console_app, viewer, sandbox):
    intake = console_app.test_client()
    old = posted(intake, load_fixture("new_referral"))
    sync = posted(intake, load_fixture("sync_subscriber"))
    run_pending(console_app)
    sandbox.configure(faults=[SPRUCE_REFUSES])
    unlocked = posted(intake, with_subscriber("reward_unlocked", "sub_unlocked1", "unlocked@example.com"))
    run_pending(console_app)
    received_days_ago(console_app, old, 3)
    assert delivery_to(console_app, "spruce").status == "succeeded"  # the old one's; the unlock's failed
    assert listed(viewer) == [unlocked, sync, old]

    assert listed(viewer, "?status=failed") == [unlocked]
    assert listed(viewer, "?status=done") == [sync, old]
    assert listed(viewer, "?type=sync_subscriber") == [sync]
    assert listed(viewer, "?destination=spruce") == [unlocked, old]
    assert listed(viewer, "?destination=spruce&status=done") == [old]
    two_days_ago = (utcnow() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    assert listed(viewer, f"?received_after={two_days_ago}") == [unlocked, sync]
    assert listed(viewer, f"?received_before={two_days_ago}") == [old]
    assert listed(viewer, f"?received_before={two_days_ago[:10]}") == [old]  # a date alone: its midnight
    assert listed(viewer, "?status=failed&type=sync_subscriber") == []
    assert listed(viewer, f"?destination=spruce&received_before={two_days_ago}") == [old]
    assert listed(viewer, f"?destination=spruce&received_after={two_days_ago}") == [unlocked]
    assert listed(viewer, "?destination=spruce&received_before=2020-01-01") == []
    # The form shows what is chosen, so that Apply keeps it.
    page = viewer.get("/console/events?status=failed&destination=spruce").text
    assert '<option value="failed" selected>' in page and '<option value="spruce" selected>' in page


BAD_FILTERS = [
    ("?status=lost", "Status"),
    ("?type=no_such_type", "Type"),
    ("?destination=nowhere", "Destination"),
    ("?received_after=yesterday", "Received after"),
    ("?received_before=2026-13-01", "Received before"),
    ("?received_after=2026-02-02&received_before=2026-02-01", "earlier"),
    ("?person=not-a-digest", "person filter is malformed"),
    ("?person=" + "A" * 64, "person filter is malformed"),
    ("?older_than=abc", "Bad paging cursor"),
    ("?newer_than=-1", "Bad paging cursor"),
    ("?older_than=99999999999", "Bad paging cursor"),
    ("?older_than=5&newer_than=3", "Bad paging cursor"),
]


def test_a_bad_filter_value_is_a_400_page_naming_it(viewer):
    for query, problem in BAD_FILTERS:
        page = viewer.get(f"/console/events{query}")
        assert page.status_code == 400, query
        assert problem in page.text and "Traceback" not in page.text, query


def add_events(app, count: int, destination: str) -> list[int]:
    """`count` events written straight to the store, oldest first: failed ones (a failed delivery
    to `destination`) and done ones (no delivery) in turn."""
    now = utcnow()
    rows = [{"type": "sync_subscriber", "status": "done" if n % 2 else "failed", "dedup_key": f"paging-{n}",
             "payload": {"type": "sync_subscriber"}, "source": "webhook", "received_at": now} for n in range(count)]
    with Runtime.of(app).db.session() as session:
        session.execute(sa.insert(Event), rows)
        failed = session.scalars(sa.select(Event.id).where(Event.status == "failed")).all()
        session.execute(sa.insert(Delivery), [{"event_id": i, "destination": destination, "status": "failed"}
                                              for i in failed])
        session.commit()
    return [e.id for e in events(app)]


def test_older_and_newer_page_through_the_events_by_id(console_app, viewer):
    destination = list(Runtime.of(console_app).destinations)[0]
    ids = add_events(console_app, 120, destination)
    newest_first = ids[::-1]
    first = viewer.get("/console/events").text
    assert [int(i) for i in EVENT_LINK.findall(first)] == newest_first[:50]
    assert link(first, "Newer") is None

    second_url = link(first, "Older")
    assert second_url is not None and parse_qs(urlsplit(second_url).query) == {"older_than": [str(newest_first[49])]}
    second = viewer.get(second_url).text
    assert [int(i) for i in EVENT_LINK.findall(second)] == newest_first[50:100]
    third = viewer.get(link(second, "Older")).text
    assert [int(i) for i in EVENT_LINK.findall(third)] == newest_first[100:]
    assert link(third, "Older") is None

    back = viewer.get(link(third, "Newer")).text
    assert [int(i) for i in EVENT_LINK.findall(back)] == newest_first[50:100]
    newest = viewer.get(link(back, "Newer")).text
    assert [int(i) for i in EVENT_LINK.findall(newest)] == newest_first[:50]
    assert link(newest, "Newer") is None and link(newest, "Older") is not None

    # With filters, the links keep them and page through the matching events only.
    failed = [i for i in newest_first if i % 2 == ids[0] % 2]
    an_hour_ago = (utcnow() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    in_an_hour = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    for query in ("status=failed", f"destination={destination}&received_after={an_hour_ago}",
                  f"destination={destination}&received_before={in_an_hour}"):
        filtered = viewer.get(f"/console/events?{query}").text
        assert [int(i) for i in EVENT_LINK.findall(filtered)] == failed[:50], query
        older = link(filtered, "Older")
        assert parse_qs(urlsplit(older).query) == {**parse_qs(query), "older_than": [str(failed[49])]}
        last = viewer.get(older).text
        assert [int(i) for i in EVENT_LINK.findall(last)] == failed[50:], query
        assert link(last, "Older") is None
        assert [int(i) for i in EVENT_LINK.findall(viewer.get(link(last, "Newer")).text)] == failed[:50], query


def test_search_by_email_shows_that_persons_events_and_keeps_the_email_out_of_the_url(console_app, viewer):
    intake = console_app.test_client()
    ann_unlocked = posted(intake, with_subscriber("reward_unlocked", "sub_ann0001", "ann.lee@example.com"))
    posted(intake, with_subscriber("reward_unlocked", "sub_bob0001", "bob@example.net"))
    ann_synced = posted(intake, with_subscriber("sync_subscriber", "sub_ann0001", "ann.lee@example.com"))

    answer = post_form(viewer, "/console/events/search", {"email": "  Ann.Lee@EXAMPLE.com ", "type": "reward_unlocked"},
                       page="/console/events?type=reward_unlocked")

    assert answer.status_code == 302
    location = answer.headers["Location"]
    for part in ("ann", "lee", "example", "@", "%40"):
        assert part not in location.lower()
    query = parse_qs(urlsplit(location).query)
    assert query == {"type": ["reward_unlocked"],
                     "person": [email_digest("ann.lee@example.com", Runtime.of(console_app).config.lookup_key)]}
    page = viewer.get(location)
    assert [int(i) for i in EVENT_LINK.findall(page.text)] == [ann_unlocked]
    assert "events of one person" in page.text and "ann.lee" not in page.text.lower()
    everyone = link(page.text, "Show everyone&#39;s events") or link(page.text, "Show everyone's events")
    assert everyone is not None and "person" not in everyone
    # Without the type filter: both of Ann's events, none of Bob's.
    person = query["person"][0]
    assert listed(viewer, f"?person={person}") == [ann_synced, ann_unlocked]
    # Someone Relay never heard of: nothing.
    nobody = post_form(viewer, "/console/events/search", {"email": "nobody@example.org"}, page="/console/events")
    assert listed(viewer, "?" + urlsplit(nobody.headers["Location"]).query) == []


@pytest.mark.parametrize("email", ["", "not-an-address"])
def test_a_search_without_an_address_is_a_400(viewer, email):
    answer = post_form(viewer, "/console/events/search", {"email": email}, page="/console/events")

    assert answer.status_code == 400 and "Search by email" in answer.text


def test_the_event_page_shows_every_attempt_of_each_delivery(console_app, viewer, sandbox):
    sandbox.configure(faults=[NOTE_POST | {"status": 500}])
    event_id = posted(console_app.test_client(), load_fixture("reward_unlocked"))
    run_pending(console_app)
    failed_call = next(r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == "spruce" and r["status"] == 500)
    detail = event_detail(Runtime.of(console_app), event_id)
    spruce = next(d for d in detail["deliveries"] if d["destination"] == "spruce")
    first, second = spruce["attempt_history"]
    assert first["vendor_request_id"] == failed_call["request_id"]

    page = viewer.get(f"/console/events/{event_id}")

    assert page.status_code == 200
    text = html.unescape(page.text)
    assert f"<h1>Event {event_id}</h1>" in text
    assert re.search(r"<dt>Type</dt><dd>reward_unlocked</dd>", text) and "<dt>Source</dt><dd>webhook</dd>" in text
    assert re.search(r'<dt>Status</dt><dd><span class="status-done">done</span>', text)
    spruce_section = page.text[page.text.index("Delivery to spruce"):]
    spruce_section = spruce_section[:spruce_section.index("</section>")]

    def shown(attempt: dict) -> list[str]:
        return [str(attempt["attempt"]), f"{attempt['started_at'][:10]} {attempt['started_at'][11:19]}",
                f"{attempt['finished_at'][:10]} {attempt['finished_at'][11:19]}", attempt["outcome"],
                str(attempt["vendor_status"]), attempt["vendor_request_id"] or "–", f"{attempt['duration_ms']} ms",
                attempt["error"] or "–", ", ".join(attempt["steps"])]

    assert table_rows(spruce_section) == [shown(first), shown(second)]
    assert (first["outcome"], first["vendor_status"], second["outcome"]) == ("retried", 500, "succeeded")
    assert NOTE in second["steps"] and NOTE not in first["steps"] and first["steps"]
    assert "Delivery to sprig" in text


def test_the_payload_is_masked_and_holds_no_personal_value(console_app, viewer, operator):
    payload = load_fixture("reward_redeemed")  # names, email, a shipping address
    event_id = posted(console_app.test_client(), payload)
    personal = sorted(personal_strings(payload))
    assert personal

    for client in (viewer, operator):
        page = html.unescape(client.get(f"/console/events/{event_id}").text)
        shown = page[page.index('<pre class="payload">'):]
        assert '"coupon_code": "9wusha0"' in shown and '"shipping_city": "***"' in shown  # masked, not left out
        assert [value for value in personal if leaked(value, page)] == []


def test_reveal_as_an_operator_shows_the_payload_in_the_answer_and_is_audited(console_app, operator):
    payload = load_fixture("reward_redeemed")
    event_id = posted(console_app.test_client(), payload)
    page = operator.get(f"/console/events/{event_id}")
    assert '<button type="submit" class="secondary" aria-describedby="reveal-hint">Reveal</button>' in page.text

    revealed = operator.post(f"/console/events/{event_id}/reveal", data={"csrf_token": token_of(page.data)})

    assert revealed.status_code == 200 and revealed.headers["Cache-Control"] == "no-store"
    assert payload["subscriber"]["email"] in html.unescape(revealed.text)
    assert payload["shipping_details"]["shipping_city"] in html.unescape(revealed.text)
    [entry] = list_entries(Runtime.of(console_app), AuditFilter(action="events.reveal"), 10)
    assert (entry["actor"], entry["interface"], entry["targets"], entry["outcome"]) == (
        "operator@example.org", "console", {"events": [event_id]}, "ok")
    assert entry["address"]
    # The page itself stays masked.
    assert payload["subscriber"]["email"] not in html.unescape(operator.get(f"/console/events/{event_id}").text)


def test_replay_shows_what_will_be_sent_then_confirm_sends_the_failed_delivery_again(console_app, operator, sandbox):
    sandbox.configure(faults=[SPRUCE_REFUSES])
    event_id = posted(console_app.test_client(), load_fixture("reward_unlocked"))
    run_pending(console_app)
    assert {d.destination: d.status for d in deliveries(console_app)} == {"sprig": "succeeded", "spruce": "failed"}
    sandbox.configure(faults=[])

    confirm = operator.get(f"/console/events/{event_id}/replay")

    assert confirm.status_code == 200
    text = words(confirm.text)
    assert "1 delivery:" in text and "reward_unlocked spruce 1" in text
    assert re.search(r"spruce 5 ", text)  # Spruce's calls for a note, at most
    assert "1: succeeded (a forced replay sends it again)" in text
    assert '<button type="submit">Confirm replay</button>' in confirm.text
    assert list_entries(Runtime.of(console_app), AuditFilter(action="events.replay"), 10) == []  # a look only
    forced = words(operator.get(f"/console/events/{event_id}/replay?force=1").text)
    assert "2 deliveries:" in forced and "reward_unlocked sprig 1" in forced

    answer = operator.post(f"/console/events/{event_id}/replay", data={"csrf_token": token_of(confirm.data)})

    assert answer.status_code == 302 and answer.headers["Location"].endswith(f"/console/events/{event_id}")
    spruce = delivery_to(console_app, "spruce")
    assert (spruce.status, delivery_to(console_app, "sprig").status) == ("pending", "succeeded")
    [entry] = list_entries(Runtime.of(console_app), AuditFilter(action="events.replay"), 10)
    assert (entry["actor"], entry["interface"], entry["outcome"]) == ("operator@example.org", "console", "ok")
    assert entry["targets"] == {"events": [event_id], "deliveries": [spruce.id]}
    assert entry["details"]["force"] is False
    after = operator.get(answer.headers["Location"]).text
    assert "Replayed 1 delivery" in after
    assert "Replayed 1 delivery" not in operator.get(f"/console/events/{event_id}").text  # said once


def test_a_viewer_sees_no_action_and_a_forged_post_is_403(console_app, viewer, sandbox):
    sandbox.configure(faults=[SPRUCE_REFUSES])
    payload = load_fixture("reward_unlocked")
    event_id = posted(console_app.test_client(), payload)
    run_pending(console_app)
    page = viewer.get(f"/console/events/{event_id}")
    assert page.status_code == 200
    for name in ("Reveal", "Replay", "Replay all", "Confirm replay"):
        assert not re.search(rf"<button[^>]*>{name}</button>", page.text), name
    token = token_of(page.data)

    for url in (f"/console/events/{event_id}/reveal", f"/console/events/{event_id}/replay"):
        forged = viewer.post(url, data={"csrf_token": token, "force": "1"})
        assert forged.status_code == 403 and "viewer" in forged.text, url
    assert viewer.get(f"/console/events/{event_id}/replay").status_code == 403
    assert payload["subscriber"]["email"] not in html.unescape(forged.text)
    assert delivery_to(console_app, "spruce").status == "failed"
    assert list_entries(Runtime.of(console_app), AuditFilter(action="events"), 10) == []


def test_a_post_without_the_csrf_token_is_403(console_app, operator):
    event_id = posted(console_app.test_client(), load_fixture("reward_unlocked"))

    for url, data in ((f"/console/events/{event_id}/reveal", {}), (f"/console/events/{event_id}/replay", {}),
                      ("/console/events/search", {"email": "ann@example.com"})):
        answer = operator.post(url, data=data)
        assert answer.status_code == 403 and "security token" in answer.text, url
    assert list_entries(Runtime.of(console_app), AuditFilter(action="events"), 10) == []


def test_a_missing_event_is_a_404_page(console_app, operator):
    for event_id in (12345, 99999999999):
        page = operator.get(f"/console/events/{event_id}")
        assert page.status_code == 404 and f"There is no event {event_id}." in page.text
        assert operator.get(f"/console/events/{event_id}/replay").status_code == 404
    token = token_of(operator.get("/console/events").data)
    assert operator.post("/console/events/12345/reveal", data={"csrf_token": token}).status_code == 404
    assert operator.post("/console/events/12345/replay", data={"csrf_token": token}).status_code == 404
