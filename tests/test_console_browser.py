"""The console end to end, in a real browser (Debian's chromium driven by Playwright, one per
module: testbed/browser.py) on the app served over HTTP on loopback, found by the names the
issue fixes (labels, buttons, headings): signing in and out (the back button then shows the
sign-in page), the Overview's destinations, searching a subscriber by email and their event's
attempts, replaying a failure group and watching it finish, Reveal, the Audit log, what a viewer
sees and may not do, and that no page a viewer sees holds a personal value of the payloads
posted. Deliveries run in the test's process (testbed.apps.run_pending) between steps, against
the sandbox. A screenshot of each page goes to the test's folder (and RELAY_SCREENSHOTS').
On PostgreSQL only: the store under test is the same for every page, and one run is enough."""
from __future__ import annotations

import copy
import re

import pytest
from playwright.sync_api import expect

from operations.audit import AuditFilter, list_entries
from relay.runtime import Runtime
from schemas.personal import NOT_PERSONAL_KEYS, leaves, personal_strings
from testbed.apps import deliveries, events, post_event, run_pending
from testbed.browser import NARROW_PHONE, PHONE, browsing, csrf_token_of, form_action, require_chromium, sign_in
from testbed.console import PASSWORD, make_account
from testbed.examples import FIXTURE_NAMES, load_fixture
from testbed.privacy import leaked

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

OPERATOR, VIEWER = "olga@clinic.example", "victor@clinic.example"
NAV = ["Overview", "Events", "Failures", "Audit log"]
SPRUCE_REFUSES_CONTACTS = {"vendor": "spruce", "status": 400, "times": None, "method": "POST",
                           "path_prefix": "/contacts"}


def referral(n: int, email: str | None = None) -> dict:
    """SparkLoop's new_referral example for subscriber n (an id and an email of its own)."""
    payload = copy.deepcopy(load_fixture("new_referral"))
    payload["subscriber"] |= {"id": f"sub_browser{n:03d}", "email": email or f"subscriber.{n}@example.net",
                              "name": f"Subscriber Number{n}", "referral_code": f"brw{n:05d}"}
    return payload


def stored(app, *payloads: dict) -> list[int]:
    """Post the payloads as SparkLoop does; their event ids."""
    client = app.test_client()
    before = {e.id for e in events(app)}
    for payload in payloads:
        assert post_event(client, payload).status_code == 200
    return sorted({e.id for e in events(app)} - before)


def heading(page, name: str):
    return page.get_by_role("heading", name=name, exact=True)


def audit_rows(page, action: str):
    return page.get_by_role("row").filter(has_text=action)


@on_postgresql
def test_an_operator_signs_in_sees_the_audit_log_and_after_signing_out_the_back_button_shows_nothing(
        console_app, console_server, browser, screenshots):
    make_account(console_app, OPERATOR, "operator")
    with browsing(browser, console_server) as page:
        page.goto("/console/audit")
        expect(heading(page, "Sign in")).to_be_visible()  # every page asks for a sign-in first
        page.get_by_label("Email").fill(OPERATOR)
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
        screenshots.take(page, "sign-in")

        sign_in(page, OPERATOR.upper(), PASSWORD)
        for name in NAV:
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        page.get_by_role("link", name="Audit log").click()
        expect(heading(page, "Audit log")).to_be_visible()
        expect(audit_rows(page, "console.sign-in")).to_have_count(2)
        expect(audit_rows(page, "wrong email or password")).to_contain_text(OPERATOR)

        page.get_by_label("Person").fill(OPERATOR)
        page.get_by_label("Action").select_option("users")
        page.get_by_role("button", name="Apply").click()
        expect(page.get_by_text("No audit entry matches.")).to_be_visible()  # the test suite added the account
        page.get_by_label("Action").select_option("console.sign-in")
        page.get_by_role("button", name="Apply").click()
        expect(audit_rows(page, "console.sign-in")).to_have_count(2)
        screenshots.take(page, "audit-log-sign-ins")

        page.get_by_role("button", name="Sign out").click()
        expect(heading(page, "Sign in")).to_be_visible()
        # The browser asks again (no-store; a page from its back/forward cache would fire no
        # load event, hence "commit"), and the console answers with the sign-in page.
        page.go_back(wait_until="commit")
        expect(heading(page, "Sign in")).to_be_visible()
        expect(heading(page, "Audit log")).to_have_count(0)
        assert OPERATOR not in page.content()
        page.goto("/console/audit")
        expect(heading(page, "Sign in")).to_be_visible()


@on_postgresql
def test_a_viewer_sees_the_audit_log_without_buttons_that_act_and_a_post_without_token_is_refused(
        console_app, console_server, browser):
    make_account(console_app, VIEWER, "viewer")
    with browsing(browser, console_server) as page:
        sign_in(page, VIEWER, PASSWORD)
        page.get_by_role("link", name="Audit log").click()
        expect(audit_rows(page, "console.sign-in")).to_contain_text(VIEWER)
        buttons = page.get_by_role("button")
        expect(buttons).to_have_text(["Sign out", "Apply"])

        forged = page.request.post("/console/sign-out", form={"csrf_token": "forged"})
        assert forged.status == 403 and "security token" in forged.text()
        assert page.request.post("/console/sign-out").status == 403
        page.reload()
        expect(heading(page, "Audit log")).to_be_visible()  # still signed in: nothing was done


@on_postgresql
def test_the_overview_shows_both_destinations(console_app, console_server, browser, screenshots, sandbox):
    stored(console_app, referral(1))
    run_pending(console_app)
    make_account(console_app, OPERATOR, "operator")
    with browsing(browser, console_server) as page:
        sign_in(page, OPERATOR, PASSWORD)
        screenshots.take(page, "overview")
        expect(heading(page, "Sprig")).to_be_visible()
        expect(heading(page, "Spruce")).to_be_visible()


@on_postgresql
def test_search_a_subscriber_by_email_and_see_both_attempts_of_a_delivery_that_failed_once(
        console_app, console_server, browser, screenshots, sandbox):
    sandbox.configure(faults=[{"vendor": "spruce", "status": 503, "times": 1, "message": "down for maintenance"}])
    [mias, *others] = stored(console_app, referral(1, "mia.search@example.com"), referral(2), referral(3))
    run_pending(console_app)
    spruce = next(d for d in deliveries(console_app) if d.event_id == mias and d.destination == "spruce")
    assert (spruce.status, spruce.attempts) == ("succeeded", 2)  # the scene as the page should show it
    make_account(console_app, OPERATOR, "operator")
    with browsing(browser, console_server) as page:
        sign_in(page, OPERATOR, PASSWORD)
        page.get_by_role("link", name="Events", exact=True).click()
        expect(heading(page, "Events")).to_be_visible()
        page.get_by_label("Search by email").fill("Mia.SEARCH@Example.COM")
        page.get_by_label("Search by email").press("Enter")
        expect(page.get_by_role("link", name=str(mias), exact=True)).to_be_visible()
        for other in others:
            expect(page.get_by_role("link", name=str(other), exact=True)).to_have_count(0)
        assert "mia" not in page.url.lower() and "example.com" not in page.url.lower()  # no address in a URL
        screenshots.take(page, "events")

        page.get_by_role("link", name=str(mias), exact=True).click()
        expect(heading(page, f"Event {mias}")).to_be_visible()
        main = page.get_by_role("main")
        for shown in ("retried", "503", "succeeded"):
            expect(main).to_contain_text(shown)
        assert "mia.search@example.com" not in page.content()  # masked until Reveal
        screenshots.take(page, "event")


@on_postgresql
def test_every_page_fits_a_phone_s_width(console_app, console_server, browser, screenshots, sandbox):
    sandbox.configure(faults=[SPRUCE_REFUSES_CONTACTS])
    [event_id] = stored(console_app, referral(1))
    run_pending(console_app)
    make_account(console_app, OPERATOR, "operator")
    for phone in (PHONE, NARROW_PHONE):
        with browsing(browser, console_server, viewport=phone) as page:
            sign_in(page, OPERATOR, PASSWORD)
            for path in ("/console/", "/console/events", f"/console/events/{event_id}", "/console/failures",
                         "/console/audit"):
                page.goto(path)
                # Wide tables scroll inside their own box; the page itself never scrolls sideways.
                assert page.evaluate("document.documentElement.scrollWidth") <= phone["width"], (path, phone)
            if phone is PHONE:
                page.goto("/console/")
                screenshots.take(page, "phone-overview")


@on_postgresql
def test_replay_a_failure_group_watch_it_finish_reveal_an_event_and_the_audit_log_shows_both(
        console_app, console_server, browser, screenshots, sandbox):
    sandbox.configure(faults=[SPRUCE_REFUSES_CONTACTS])
    ids = stored(console_app, *(referral(n) for n in range(1, 4)))
    run_pending(console_app)
    assert sorted(d.status for d in deliveries(console_app) if d.destination == "spruce") == ["failed"] * 3
    make_account(console_app, OPERATOR, "operator")
    with browsing(browser, console_server) as page:
        sign_in(page, OPERATOR, PASSWORD)
        page.get_by_role("link", name="Failures", exact=True).click()
        expect(heading(page, "Failures")).to_be_visible()
        replay = page.get_by_role("button", name="Replay 3 deliveries")
        expect(replay).to_be_visible()
        screenshots.take(page, "failures")
        replay.click()
        confirm = page.get_by_role("button", name="Confirm replay")
        expect(confirm).to_be_visible()
        screenshots.take(page, "confirm")

        sandbox.configure(faults=[])
        confirm.click()
        expect(page.get_by_role("button", name="Confirm replay")).to_have_count(0)
        run_pending(console_app)  # the worker's part, while the page watches
        expect(page.get_by_text("Done", exact=True).first).to_be_visible(timeout=20_000)
        assert sorted(d.status for d in deliveries(console_app) if d.destination == "spruce") == ["succeeded"] * 3

        page.goto(f"/console/events/{ids[0]}")
        page.get_by_role("button", name="Reveal", exact=True).click()
        expect(page.get_by_role("main")).to_contain_text("subscriber.1@example.net")

        page.get_by_role("link", name="Audit log").click()
        replayed, revealed = audit_rows(page, "events.replay"), audit_rows(page, "events.reveal")
        for row in (replayed, revealed):
            expect(row).to_have_count(1)
            expect(row).to_contain_text(OPERATOR)
            expect(row).to_contain_text("console")
        for event_id in ids:
            expect(replayed.get_by_role("link", name=str(event_id), exact=True)).to_be_visible()
        expect(revealed.get_by_role("link", name=str(ids[0]), exact=True)).to_have_attribute(
            "href", f"/console/events/{ids[0]}")
        screenshots.take(page, "audit-log")


@on_postgresql
def test_a_viewer_sees_no_replay_or_reveal_and_their_forged_posts_are_refused(
        console_app, console_server, browser, sandbox):
    sandbox.configure(faults=[SPRUCE_REFUSES_CONTACTS])
    [event_id] = stored(console_app, referral(1))
    run_pending(console_app)
    make_account(console_app, OPERATOR, "operator")
    make_account(console_app, VIEWER, "viewer")
    with browsing(browser, console_server) as operator, browsing(browser, console_server) as viewer:
        # Where the operator's forms post: Reveal, and the Confirm replay each replay button leads to.
        sign_in(operator, OPERATOR, PASSWORD)
        operator.goto(f"/console/events/{event_id}")
        actions = {form_action(operator, "Reveal")}
        for page, button in ((f"/console/events/{event_id}", "Replay"), (f"/console/events/{event_id}", "Replay all"),
                             ("/console/failures", "Replay 1 delivery")):
            operator.goto(page)
            operator.get_by_role("button", name=button, exact=True).click()
            actions.add(form_action(operator, "Confirm replay"))

        sign_in(viewer, VIEWER, PASSWORD)
        viewer.goto(f"/console/events/{event_id}")
        expect(heading(viewer, f"Event {event_id}")).to_be_visible()
        for name in ("Reveal", "Replay", "Replay all"):
            expect(viewer.get_by_role("button", name=name, exact=True)).to_have_count(0)
        viewer.goto("/console/failures")
        expect(heading(viewer, "Failures")).to_be_visible()
        expect(viewer.get_by_role("button", name=re.compile("^Replay"))).to_have_count(0)

        token = csrf_token_of(viewer)
        for url in actions:
            assert viewer.request.post(url, form={"csrf_token": token}).status == 403, url  # a viewer's own token
            assert viewer.request.post(url).status == 403, url
            assert operator.request.post(url).status == 403, url  # an operator's, without the token
    # Nothing was done: the delivery is as it was, and no reveal or replay was recorded.
    assert [d.status for d in deliveries(console_app) if d.destination == "spruce"] == ["failed"]
    assert list_entries(Runtime.of(console_app), AuditFilter(action="events"), 10) == []


@on_postgresql
def test_no_page_a_viewer_sees_holds_a_personal_value_of_the_payloads(
        console_app, console_server, browser, sandbox):
    payloads = [load_fixture(name) for name in FIXTURE_NAMES]
    sandbox.configure(faults=[SPRUCE_REFUSES_CONTACTS])  # failure groups, with their errors
    stored(console_app, *payloads)
    run_pending(console_app)
    # A value a payload also gives under an identifier's key (SparkLoop's partner id) is shown as one.
    identifiers = {value for payload in payloads for key, value in leaves(payload) if key in NOT_PERSONAL_KEYS}
    personal = {value for payload in payloads for value in personal_strings(payload)} - identifiers
    assert "john.doe@email.com" in personal
    make_account(console_app, VIEWER, "viewer")
    pages = ["/console/", "/console/events", "/console/failures", "/console/audit"]
    pages += [f"/console/events/{event.id}" for event in events(console_app)]
    with browsing(browser, console_server) as page:
        sign_in(page, VIEWER, PASSWORD)
        for url in pages:
            answer = page.goto(url)
            assert answer is not None and answer.status == 200, url
            html = page.content()
            assert not sorted(value for value in personal if leaked(value, html)), url


def test_without_chromium_the_browser_tests_skip_and_fail_under_ci(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is not installed"):
        require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        require_chromium()
