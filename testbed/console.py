"""The console as a test uses it through Flask's test client: accounts, signing in, and the
CSRF token a form carries."""

from __future__ import annotations

import re
from functools import cache

from werkzeug.security import generate_password_hash

from operations.accounts import add_account
from operations.audit import Actor
from relay.models import Account
from relay.runtime import Runtime

# A key like `relay keys new` makes (random, 44 characters).
CONSOLE_KEY = "q8Vb1kXz3mJr6TnWc0LsYp9HdGf2AeUo7iNtRwKxZy4="
PASSWORD = "correct horse battery staple"
TEST_ACTOR = Actor("test-suite", "cli")
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_account(app, email: str, role: str, password: str = PASSWORD) -> None:
    add_account(Runtime.of(app), email, role, password, actor=TEST_ACTOR)


def token_of(html: str | bytes) -> str:
    """The CSRF token of the first form in a page."""
    text = html.decode() if isinstance(html, bytes) else html
    found = _TOKEN.search(text)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client, email: str, password: str = PASSWORD, **kwargs):
    """Post the sign-in form as a browser would (its token from the sign-in page)."""
    token = token_of(client.get("/console/sign-in", **kwargs).data)
    return client.post("/console/sign-in", data={"email": email, "password": password, "csrf_token": token}, **kwargs)


def signed_in_client(app, email: str, role: str):
    """A test client signed in, through the sign-in form, to a new account with this role. The
    account is written straight to the store with PASSWORD's hash made once per process and
    without an audit entry: setting up a test is no operator's action (make_account is the real
    `relay users add`, with its real cost)."""
    with Runtime.of(app).session() as session:
        session.add(Account(email=email, role=role, password_hash=_password_hash()))
        session.commit()
    client = app.test_client()
    answer = sign_in(client, email)
    assert answer.status_code == 302, answer.data
    return client


# scrypt with a work factor of 2**10, not `relay users add`'s 2**15: signing in verifies it with
# the same check_password_hash (the factor is read from the hash), in 3 ms instead of 100 ms,
# and every test signed in as `operator` or `viewer` signs in through the form.
# tests/test_users.py holds `relay users add` to its own hash.
@cache
def _password_hash() -> str:
    return generate_password_hash(PASSWORD, method="scrypt:1024:8:1")


def post_form(client, url: str, data: dict | None = None, page: str | None = None, **kwargs):
    """Post a console form with the token of `page` (default: the URL itself, loaded first)."""
    token = token_of(client.get(page or url).data)
    return client.post(url, data={**(data or {}), "csrf_token": token}, **kwargs)
