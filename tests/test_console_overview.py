"""The console's overview (/console/): a section per configured destination, headed by its name,
with its state (breaker, throttle), backlog, what finished in the last hour and day, its last
error and the rate limits the vendor stated; a chart of deliveries per minute drawn as SVG; the
sweep's last run and the intake's last webhook. Through Flask's test client, on SQLite and
PostgreSQL, Redis and the sandbox."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser

import sqlalchemy as sa

from relay.models import Delivery, DeliveryAttempt, utcnow
from relay.runtime import Runtime
from testbed.apps import deliveries, delivery_to, post_event, run_pending
from testbed.console import CONSOLE_KEY, signed_in_client
from testbed.examples import load_fixture
from testbed.reserves import RESERVES, park_spruce
from workers.sweep import sweep_and_check_in

VOID = {"meta", "link", "input", "br", "hr", "img"}
NOTE_POST = {"vendor": "spruce", "method": "POST", "path_prefix": "/conversations/t_", "times": None}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    children: list[Element | str] = field(default_factory=list)

    def all(self, tag: str) -> list[Element]:
        found = [self] if self.tag == tag else []
        for child in self.children:
            if isinstance(child, Element):
                found.extend(child.all(tag))
        return found

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return " ".join("".join(parts).split())


def parse(html: bytes) -> Element:
    root = Element("document", {})
    open_elements = [root]

    class Builder(HTMLParser):
        def handle_starttag(self, tag, attrs):
            element = Element(tag, dict(attrs))
            open_elements[-1].children.append(element)
            if tag not in VOID:
                open_elements.append(element)

        def handle_startendtag(self, tag, attrs):
            open_elements[-1].children.append(Element(tag, dict(attrs)))

        def handle_endtag(self, tag):
            while len(open_elements) > 1 and open_elements.pop().tag != tag:
                pass

        def handle_data(self, data):
            open_elements[-1].children.append(data)

    Builder().feed(html.decode())
    return root


def sections(page: Element) -> dict[str, Element]:
    """The page's sections by their heading, each checked to be named by it (aria-labelledby)."""
    found = {}
    for section in page.all("section"):
        [heading] = section.all("h2")
        assert section.attrs["aria-labelledby"] == heading.attrs["id"], heading.text
        found[heading.text] = section
    return found


def overview(client) -> Element:
    answer = client.get("/console/")
    assert answer.status_code == 200, answer.data
    return parse(answer.data)


def fact(section: Element, term: str) -> str:
    """The text of a section's `dd` after the `dt` that says `term`."""
    [facts] = section.all("dl")
    items = [c for c in facts.children if isinstance(c, Element)]
    at = next(n for n, item in enumerate(items) if item.tag == "dt" and item.text == term)
    return items[at + 1].text


def finished_counts(section: Element) -> dict[str, tuple[int, int]]:
    """Window -> (succeeded, failed), from the section's table."""
    [table] = section.all("table")
    rows = {}
    for row in table.all("tbody")[0].all("tr"):
        [window] = row.all("th")
        rows[window.text] = tuple(int(cell.text) for cell in row.all("td"))
    return rows


def move(app, delivery_id: int, **values) -> None:
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).where(Delivery.id == delivery_id).values(**values))
        session.commit()


def another(payload: dict, n: int) -> dict:
    """The same event for another subscriber (a new de-duplication key)."""
    payload["subscriber"].update(id=f"sub_overview{n}", email=f"overview{n}@example.com")
    return payload


def test_each_destination_has_a_section_headed_by_its_name_and_the_page_is_not_cached(viewer):
    answer = viewer.get("/console/")

    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    found = sections(parse(answer.data))
    assert {"Sprig", "Spruce"} <= set(found)
    for name in ("Sprig", "Spruce"):
        assert fact(found[name], "State") == "delivering"
        assert fact(found[name], "Backlog") == "0 waiting (0 pending, 0 in flight)"
        assert fact(found[name], "Last error (24 hours)") == "no delivery failed"
        assert fact(found[name], "Parked") == "none: no reserve stops its work"
        assert finished_counts(found[name]) == {"Last hour": (0, 0), "Last 24 hours": (0, 0)}
        assert re.fullmatch(r"0 calls in the current window \(limit 1000/1s\)", fact(found[name], "Rate window"))


def test_a_visitor_who_is_not_signed_in_is_sent_to_sign_in(console_app):
    answer = console_app.test_client().get("/console/")

    assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/sign-in")


def test_counts_backlog_and_last_error_follow_the_deliveries(console_app, operator, sandbox):
    sandbox.configure(faults=[NOTE_POST | {"status": 400, "message": "note rejected"}])
    hook = console_app.test_client()
    for n in (1, 2):
        assert post_event(hook, another(load_fixture("reward_unlocked"), n)).status_code == 200
    run_pending(console_app)
    first_sprig = next(d for d in deliveries(console_app) if d.destination == "sprig")
    move(console_app, first_sprig.id, finished_at=utcnow() - timedelta(hours=2))  # in the day, not the hour
    post_event(hook, another(load_fixture("new_referral"), 3))  # waits: nothing runs it
    waiting = [d for d in deliveries(console_app) if d.status == "pending"]
    assert {d.destination for d in waiting} == {"sprig", "spruce"}
    for delivery in waiting:
        move(console_app, delivery.id, created_at=utcnow() - timedelta(minutes=10))
    failed = [d for d in deliveries(console_app) if d.status == "failed"]
    assert [d.destination for d in failed] == ["spruce", "spruce"] and "note rejected" in failed[-1].last_error
    move(console_app, failed[0].id, finished_at=utcnow() - timedelta(hours=30), last_error="an older error")

    found = sections(overview(operator))

    assert finished_counts(found["Sprig"]) == {"Last hour": (1, 0), "Last 24 hours": (2, 0)}
    assert finished_counts(found["Spruce"]) == {"Last hour": (0, 1), "Last 24 hours": (0, 1)}
    for name in ("Sprig", "Spruce"):
        assert fact(found[name], "Backlog") == "1 waiting (1 pending, 0 in flight); the oldest for 10m"
    assert fact(found["Sprig"], "Last error (24 hours)") == "no delivery failed"
    last_error = fact(found["Spruce"], "Last error (24 hours)")
    assert last_error.startswith(failed[-1].last_error[:100]) and "note rejected" in last_error
    assert re.search(r"\(\d+s ago\)$", last_error)


def test_a_long_error_is_cut_short(console_app, operator, sandbox):
    sandbox.configure(faults=[NOTE_POST | {"status": 400, "message": "x" * 400}])
    post_event(console_app.test_client(), load_fixture("reward_unlocked"))
    run_pending(console_app)
    error = delivery_to(console_app, "spruce").last_error
    assert len(error) > 300

    shown = fact(sections(overview(operator))["Spruce"], "Last error (24 hours)")

    brief = shown.rsplit(" (", 1)[0]
    assert len(brief) == 120 and brief.endswith("…") and error.startswith(brief[:-1])


def test_an_open_breaker_is_shown_in_its_destinations_section(relay_app):
    app = relay_app(RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY, SPRIG_API_KEY="revoked")
    post_event(app.test_client(), load_fixture("reward_unlocked"))
    run_pending(app, rounds=1)  # Sprig answers 403: the breaker opens at once
    client = signed_in_client(app, "viewer@example.org", "viewer")

    found = sections(overview(client))

    assert fact(found["Sprig"], "State").startswith("breaker open: calls stopped")
    assert fact(found["Spruce"], "State") == "delivering"
    assert fact(found["Sprig"], "Backlog").startswith("1 waiting (1 pending, 0 in flight)")


def test_without_redis_url_the_throttle_and_breaker_are_not_visible(relay_app):
    app = relay_app(RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY, REDIS_URL="")
    client = signed_in_client(app, "viewer@example.org", "viewer")

    found = sections(overview(client))

    for name in ("Sprig", "Spruce"):
        assert fact(found[name], "State").startswith("not visible: no REDIS_URL")
        assert fact(found[name], "Rate window") == "not visible"


def test_the_chart_has_a_bar_for_each_minute_with_deliveries(console_app, operator, sandbox):
    sandbox.configure(faults=[NOTE_POST | {"status": 400}])
    for n in (1, 2):
        post_event(console_app.test_client(), another(load_fixture("reward_unlocked"), n))
    run_pending(console_app)
    sprig_1, spruce_1, sprig_2, spruce_2 = deliveries(console_app)
    assert [d.status for d in (sprig_1, spruce_1, sprig_2, spruce_2)] == ["succeeded", "failed"] * 2
    minute = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=10)
    # Either side of a minute's end, and one finished before the chart's three hours.
    move(console_app, sprig_1.id, finished_at=minute + timedelta(seconds=59.9))
    move(console_app, spruce_1.id, finished_at=minute + timedelta(seconds=60.1))
    move(console_app, spruce_2.id, finished_at=minute + timedelta(seconds=60.6))
    move(console_app, sprig_2.id, finished_at=utcnow() - timedelta(hours=4))

    page = overview(operator)

    [svg] = page.all("svg")
    assert svg.attrs["role"] == "img" and "style" not in svg.attrs
    [title] = [t for t in svg.children if isinstance(t, Element) and t.tag == "title"]
    assert svg.attrs["aria-labelledby"] == title.attrs["id"]
    assert "1 succeeded, 2 failed" in title.text and "busiest minute" in title.text
    bars = {g.all("title")[0].text: [r.attrs["class"] for r in g.all("rect")] for g in svg.all("g")}
    next_minute = minute + timedelta(minutes=1)
    assert bars == {
        f"{minute:%H:%M} UTC: 1 succeeded, 0 failed": ["bar-ok"],
        f"{next_minute:%H:%M} UTC: 0 succeeded, 2 failed": ["bar-failed"],
    }


def test_the_vendors_stated_rate_limits_are_shown_as_it_stated_them(console_app, operator, sandbox):
    sandbox.configure(rate_limit={"spruce": {"limit": 100_000, "daily_limit": 5000}})
    post_event(console_app.test_client(), load_fixture("reward_unlocked"))
    run_pending(console_app)
    with Runtime.of(console_app).db.session() as session:
        stated = session.scalars(sa.select(DeliveryAttempt.rate_limits).order_by(DeliveryAttempt.id)).all()
    spruce_stated = next(limits for limits in reversed(stated) if limits and "daily_limit" in limits)

    found = sections(overview(operator))

    shown = fact(found["Spruce"], "Vendor's rate limits")
    assert "daily limit: 5000" in shown and f"daily remaining: {spruce_stated['daily_remaining']}" in shown
    assert f"remaining: {spruce_stated['remaining']}" in shown
    assert fact(found["Sprig"], "Vendor's rate limits") == "none stated lately"  # Sprig states none unthrottled


def test_what_a_reserve_parked_is_shown_by_lane_and_why(relay_app, sandbox):
    app = relay_app(RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY, **RESERVES)
    park_spruce(app, sandbox)

    found = sections(overview(signed_in_client(app, "viewer@example.org", "viewer")))

    assert fact(found["Sprig"], "Parked") == "none: no reserve stops its work"
    assert fact(found["Spruce"], "Parked") == (
        "2 live (pending, no attempt spent): Spruce's daily remaining at its live reserve (20%) "
        "1 retry (pending, no attempt spent): Spruce's daily remaining at its retry reserve (20%) "
        "1 catch-up (pending, no attempt spent): Spruce's daily remaining at its catch-up reserve (25%)")
    assert fact(found["Spruce"], "State") == "delivering"


def test_the_sweeps_last_run_and_the_last_webhook(console_app, operator):
    before = sections(overview(operator))["Sweep and intake"]
    assert fact(before, "Sweep (beat)").startswith("no sweep has finished since Redis was last emptied: start beat")
    assert fact(before, "Last webhook") == "none received yet"

    post_event(console_app.test_client(), load_fixture("reward_unlocked"))
    with console_app.app_context():
        sweep_and_check_in(Runtime.of(console_app))  # as beat's scheduled sweep runs
    after = sections(overview(operator))["Sweep and intake"]

    assert re.fullmatch(r"last sweep finished \d+s ago", fact(after, "Sweep (beat)"))
    assert re.fullmatch(r"received \d+s ago \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)", fact(after, "Last webhook"))
