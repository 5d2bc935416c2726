"""Holding and resuming a destination from the console's Overview (operations.destinations): an
operator holds one with a reason, the page says it is held (why, by whom, since when) and offers
Resume, whose confirmation shows what is held and how long it takes; both are audited as the
console's actor. A viewer sees the state but no button, and a forged POST is refused. Held
deliveries read "held" on the Events pages. Through Flask's test client on both stores."""
from __future__ import annotations

import html
import re

import sqlalchemy as sa

from operations import destinations
from relay.models import AuditEntry
from relay.runtime import Runtime
from testbed.apps import deliveries, dispatch_stored, post_event, run_pending
from testbed.console import post_form, token_of
from testbed.drills.traffic import reward_event

OPERATOR = "operator@example.org"


def text_of(answer) -> str:
    """The page's text, tags dropped and spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", answer.get_data(as_text=True))).split())


def spruce_section(answer) -> str:
    page = answer.get_data(as_text=True)
    start = page.index('aria-labelledby="destination-spruce"')
    return page[start : page.index("</section>", start)]


def audit_rows(app) -> list[AuditEntry]:
    with Runtime.of(app).db.session() as session:
        return list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


def test_an_operator_holds_spruce_with_a_reason_and_resumes_it_after_a_confirmation(console_app, operator, sandbox):
    section = spruce_section(operator.get("/console/"))
    assert 'action="/console/destinations/spruce/hold"' in section and ">Hold</button>" in section
    assert '<label for="hold-reason-spruce">Reason</label>' in section and ">Resume</button>" not in section

    held = post_form(operator, "/console/destinations/spruce/hold", {"reason": "  Spruce  maintenance "},
                     page="/console/", follow_redirects=True)
    assert held.status_code == 200
    assert "Held spruce: its deliveries wait until you resume it; the other destinations go on." in text_of(held)
    [hold] = destinations.holds(Runtime.of(console_app)).values()
    assert (hold.destination, hold.reason, hold.held_by) == ("spruce", "Spruce maintenance", OPERATOR)
    state = text_of(held).split("Spruce State ", 1)[1]
    assert state.startswith(f"held since {hold.held_at:%Y-%m-%d %H:%M:%S} UTC (") and \
           f"ago) by {OPERATOR}: Spruce maintenance Rate window" in state
    section = spruce_section(held)
    assert ">Hold</button>" not in section and ">Resume</button>" in section
    assert 'action="/console/destinations/spruce/resume"' in section

    hook = console_app.test_client()
    for n in range(2):
        assert post_event(hook, reward_event("reward_unlocked", n)).status_code == 200
    dispatch_stored(console_app)
    run_pending(console_app)
    spruce = [d for d in deliveries(console_app) if d.destination == "spruce"]
    assert [(d.status, d.attempts) for d in spruce] == [("pending", 0)] * 2

    event_page = text_of(operator.get(f"/console/events/{spruce[0].event_id}"))
    assert "Delivery to spruce: held" in event_page
    assert f"Held spruce is held since {hold.held_at:%Y-%m-%d %H:%M:%S} UTC by {OPERATOR}: Spruce maintenance" \
           in event_page
    listed = operator.get("/console/events").get_data(as_text=True)
    assert listed.count('<span class="status-held">held</span>') == 2

    confirm = operator.get("/console/destinations/spruce/resume")
    assert confirm.status_code == 200
    page = text_of(confirm)
    assert f"Held since {hold.held_at:%Y-%m-%d %H:%M:%S} UTC by {OPERATOR}: Spruce maintenance" in page
    assert "Waiting 2 deliveries pending, the oldest for " in page
    assert "Lane Deliveries live 2" in page
    assert "Estimate: up to 10 vendor calls, about 0s at 1000 per 1 s with no other traffic." in page
    assert ">Confirm resume</button>" in confirm.get_data(as_text=True)
    assert destinations.holds(Runtime.of(console_app))  # looking changed nothing

    resumed = post_form(operator, "/console/destinations/spruce/resume", page="/console/destinations/spruce/resume",
                        follow_redirects=True)
    assert "Resumed spruce: 2 deliveries go, live before catch-up, within its limits." in text_of(resumed)
    assert destinations.holds(Runtime.of(console_app)) == {}
    assert ">Hold</button>" in spruce_section(resumed)
    dispatch_stored(console_app)
    run_pending(console_app)
    assert [d.status for d in deliveries(console_app) if d.destination == "spruce"] == ["succeeded"] * 2

    entries = [e for e in audit_rows(console_app) if e.action.startswith("destinations.")]
    assert [(e.action, e.actor, e.interface, e.outcome, e.targets) for e in entries] == [
        ("destinations.hold", OPERATOR, "console", "ok", {"destination": "spruce"}),
        ("destinations.resume", OPERATOR, "console", "ok", {"destination": "spruce"}),
    ]
    assert entries[0].details["reason"] == "Spruce maintenance" and entries[0].address == "127.0.0.1"
    assert entries[1].details["pending_by_lane"] == {"live": 2}


def test_a_viewer_sees_the_hold_but_no_button_and_a_forged_post_is_refused(console_app, operator, viewer):
    answer = post_form(operator, "/console/destinations/spruce/hold", {"reason": "repair"}, page="/console/")
    assert answer.status_code == 302, answer.data
    page = viewer.get("/console/")
    assert re.search(r"<dt>State</dt>\s*<dd><span class=\"state state-held\">held</span><span class=\"muted\"> since "
                     rf"[^<]+ by {OPERATOR}: repair</span>", spruce_section(page))
    shown = page.get_data(as_text=True)
    assert "/console/destinations/" not in shown and ">Hold</button>" not in shown and ">Resume</button>" not in shown

    token = token_of(page.data)
    for url in ("/console/destinations/spruce/resume", "/console/destinations/sprig/hold"):
        forged = viewer.post(url, data={"csrf_token": token, "reason": "x"})
        assert forged.status_code == 403 and "may look but not act" in text_of(forged)
    assert viewer.get("/console/destinations/spruce/resume").status_code == 403
    assert list(destinations.holds(Runtime.of(console_app))) == ["spruce"]
    assert [e.action for e in audit_rows(console_app) if e.action.startswith("destinations.")] == ["destinations.hold"]


def test_a_hold_without_the_csrf_token_is_refused(console_app, operator):
    refused = operator.post("/console/destinations/spruce/hold", data={"reason": "x"})
    assert refused.status_code == 403 and "security token" in text_of(refused)
    assert destinations.holds(Runtime.of(console_app)) == {}


def test_bad_input_gets_a_page_naming_the_problem(console_app, operator):
    unknown = post_form(operator, "/console/destinations/spruse/hold", {"reason": "x"}, page="/console/")
    assert unknown.status_code == 404
    assert "No destination is named 'spruse': the destinations are sprig, spruce." in text_of(unknown)
    assert operator.get("/console/destinations/spruse/resume").status_code == 404
    email = post_form(operator, "/console/destinations/spruce/hold", {"reason": "for ann@example.com"},
                      page="/console/")
    assert email.status_code == 400 and "Reason: the reason holds an email address" in text_of(email)
    assert "ann@example.com" not in email.get_data(as_text=True)
    assert destinations.holds(Runtime.of(console_app)) == {}

    not_held = operator.get("/console/destinations/spruce/resume")
    assert not_held.status_code == 200 and "spruce is not held: nothing to resume." in text_of(not_held)
    assert ">Confirm resume</button>" not in not_held.get_data(as_text=True)
    resumed = post_form(operator, "/console/destinations/spruce/resume", page="/console/", follow_redirects=True)
    assert "spruce is not held: nothing to resume." in text_of(resumed)
