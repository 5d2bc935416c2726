"""The console's door: off without RELAY_CONSOLE_SECRET_KEY (a weak key refused, naming the
variable), every page behind sign-in, one message for a wrong email or password, failures
counted per account and per address across processes, sessions that end on the server (sign-out,
idle time, a removed account, a changed password or role), CSRF on every POST, and the headers
that keep pages out of caches and scripts out of pages. Through Flask's test client on the real
store and Redis."""

from __future__ import annotations

import time

import pytest

from operations import audit
from operations.accounts import remove_account, set_password, set_role
from operations.audit import AuditFilter
from operations.sign_in import MAX_FAILURES
from relay.config import ConfigError
from relay.runtime import Runtime
from testbed.apps import make_app
from testbed.console import CONSOLE_KEY, PASSWORD, TEST_ACTOR, make_account, post_form, sign_in, signed_in_client

# Sign-in and sessions live in Redis and the accounts table: one store is enough.
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

PAGES = ["/console/", "/console/events", "/console/failures", "/console/audit"]
EMAIL = "lead@clinic.example"


def entries(app, action="console") -> list[dict]:
    return audit.list_entries(Runtime.of(app), AuditFilter(action=action), limit=100)


def test_the_console_is_off_without_its_key(app):
    assert app.test_client().get("/console/sign-in").status_code == 404


@pytest.mark.parametrize(
    "key, problem",
    [("short", "at least 32 characters"), ("a" * 40, "guessable"), ("password" * 5, "guessable")],
)
def test_a_weak_key_is_refused_at_start_naming_the_variable(environ, key, problem):
    with pytest.raises(ConfigError) as refused:
        make_app({**environ, "RELAY_CONSOLE_SECRET_KEY": key}, migrate=False)
    assert "RELAY_CONSOLE_SECRET_KEY" in str(refused.value) and problem in str(refused.value)
    assert key not in str(refused.value)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_needs_a_signed_in_person(console_app, page):
    answer = console_app.test_client().get(page)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/sign-in")


def test_an_operator_signs_in_and_sees_every_page_with_the_console_headers(console_app, operator):
    for page in PAGES:
        answer = operator.get(page)
        assert answer.status_code == 200, page
        html = answer.get_data(as_text=True)
        for link in ("Overview", "Events", "Failures", "Audit log", "Sign out"):
            assert f">{link}<" in html, (page, link)
        assert answer.headers["Cache-Control"] == "no-store"
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy and "unsafe-inline" not in policy
        assert answer.headers["X-Frame-Options"] == "DENY"
    assert [(e["actor"], e["interface"], e["outcome"]) for e in entries(console_app)] == [
        ("operator@example.org", "console", "ok")
    ]


def test_the_session_cookie_is_http_only_lax_and_secure_over_https(console_app):
    make_account(console_app, EMAIL, "viewer")
    for scheme, secure in (("http", False), ("https", True)):
        client = console_app.test_client()
        # The PaaS router says how the page was served (RELAY_PROXY_HOPS=1, ProxyFix).
        answer = sign_in(client, EMAIL, headers={"X-Forwarded-Proto": scheme})
        cookie = next(c for c in answer.headers.getlist("Set-Cookie") if c.startswith("relay_console="))
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
        assert ("Secure" in cookie) is secure


def test_a_wrong_email_or_password_gets_one_message_and_is_audited_without_what_was_typed(console_app):
    make_account(console_app, EMAIL, "operator")
    wrong_password = sign_in(console_app.test_client(), EMAIL, "not the password")
    no_account = sign_in(console_app.test_client(), "nobody@clinic.example", PASSWORD)
    for answer in (wrong_password, no_account):
        assert answer.status_code == 401
        assert "Wrong email or password." in answer.get_data(as_text=True)
    recorded = entries(console_app)
    assert [(e["actor"], e["outcome"], e["reason"]) for e in reversed(recorded)] == [
        (EMAIL, "refused", "wrong email or password"),
        ("unknown account", "refused", "wrong email or password"),
    ]
    assert "nobody@clinic.example" not in str(recorded) and "not the password" not in str(recorded)


def test_after_five_failures_an_account_waits_even_with_the_right_password(relay_app):
    one = relay_app(RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY)
    other = relay_app(RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY)  # another web process, the same Redis
    make_account(one, EMAIL, "operator")
    for attempt in range(MAX_FAILURES):
        app = one if attempt % 2 else other
        answer = sign_in(app.test_client(), EMAIL, "wrong password", environ_base={"REMOTE_ADDR": f"10.0.0.{attempt}"})
        assert answer.status_code == 401
    refused = sign_in(other.test_client(), EMAIL, PASSWORD, environ_base={"REMOTE_ADDR": "10.0.1.1"})
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.get_data(as_text=True)
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert entries(one)[0]["reason"] == "too many failed sign-ins"


def test_after_five_failures_an_address_waits_whichever_account_it_tries(console_app):
    make_account(console_app, EMAIL, "operator")
    address = {"REMOTE_ADDR": "10.0.0.9"}
    for n in range(MAX_FAILURES):
        sign_in(console_app.test_client(), f"guess{n}@clinic.example", "wrong password", environ_base=address)
    assert sign_in(console_app.test_client(), EMAIL, PASSWORD, environ_base=address).status_code == 429
    assert sign_in(console_app.test_client(), EMAIL, PASSWORD).status_code == 302  # from elsewhere


def test_sign_out_ends_the_session_on_the_server(console_app, operator):
    kept = operator.get_cookie("relay_console", path="/console")
    assert post_form(operator, "/console/sign-out", page="/console/").status_code == 302
    assert operator.get("/console/").status_code == 302
    # A copy of the cookie taken before signing out opens nothing either.
    thief = console_app.test_client()
    thief.set_cookie("relay_console", kept.value, path="/console")
    assert thief.get("/console/").status_code == 302
    assert [e["action"] for e in entries(console_app)][:2] == ["console.sign-out", "console.sign-in"]


@pytest.mark.parametrize(
    "change",
    [
        lambda runtime: set_password(runtime, "operator@example.org", "another long password", actor=TEST_ACTOR),
        lambda runtime: set_role(runtime, "operator@example.org", "viewer", actor=TEST_ACTOR),
        lambda runtime: remove_account(runtime, "operator@example.org", actor=TEST_ACTOR),
    ],
    ids=["password", "role", "removed"],
)
def test_a_changed_or_removed_account_is_signed_out(console_app, operator, change):
    assert operator.get("/console/").status_code == 200
    change(Runtime.of(console_app))
    assert operator.get("/console/").status_code == 302


def test_a_session_ends_after_its_idle_time(relay_app):
    app = relay_app(RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY, RELAY_CONSOLE_IDLE="1s")
    client = signed_in_client(app, EMAIL, "viewer")
    assert client.get("/console/").status_code == 200
    time.sleep(2.2)
    assert client.get("/console/").status_code == 302


def test_a_post_without_the_form_token_is_refused(console_app, operator):
    answer = operator.post("/console/sign-out")
    assert answer.status_code == 403
    assert "security token is missing" in answer.get_data(as_text=True)
    assert operator.get("/console/").status_code == 200  # still signed in


def test_sign_in_itself_needs_the_form_token(console_app):
    make_account(console_app, EMAIL, "operator")
    answer = console_app.test_client().post("/console/sign-in", data={"email": EMAIL, "password": PASSWORD})
    assert answer.status_code == 403


def test_a_signed_in_person_is_sent_on_from_the_sign_in_page(operator):
    answer = operator.get("/console/sign-in")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/")
