"""`relay dev` turns the console on: a random RELAY_CONSOLE_SECRET_KEY kept in instance/dev.env
(unless one is set), an operator account in dev's own SQLite store when it has none (never in a
DATABASE_URL's store), and the address and credentials in the banner; a person signs in with
them over HTTP."""
from __future__ import annotations

import json
import re
import stat

import httpx
import pytest
import sqlalchemy as sa

from operations.accounts import OPERATOR, authenticate, list_accounts, set_password
from relay.models import AuditEntry
from relay.runtime import Runtime
from testbed.console import CONSOLE_KEY, PASSWORD, TEST_ACTOR, make_account, token_of
from testbed.dev_processes import dev_ports, relay_dev
from web.cli.dev import CONSOLE_ACCOUNT_FILE, DEV_OPERATOR, console_lines, dev_console, plan_dev

URL = "http://127.0.0.1:5000"


def test_a_random_console_key_is_made_unless_one_is_set():
    first, second = (plan_dev(8000, 8025, 8026, environ={}) for _ in range(2))
    key = first.dev_settings["RELAY_CONSOLE_SECRET_KEY"]
    assert first.env["RELAY_CONSOLE_SECRET_KEY"] == key and len(key) >= 32
    assert second.dev_settings["RELAY_CONSOLE_SECRET_KEY"] != key
    given = plan_dev(8000, 8025, 8026, environ={"RELAY_CONSOLE_SECRET_KEY": CONSOLE_KEY})
    assert given.env["RELAY_CONSOLE_SECRET_KEY"] == CONSOLE_KEY
    assert "RELAY_CONSOLE_SECRET_KEY" not in given.dev_settings  # not written to dev.env: it is the user's


def test_dev_makes_an_operator_in_its_own_store_once_and_keeps_the_password_for_its_owner(bare_app, tmp_path):
    dev_app = bare_app(RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY)  # dev's own SQLite store, the console on
    instance = tmp_path / "instance"
    runtime = Runtime.of(dev_app)

    made = dev_console(dev_app, {}, instance)

    assert made.email == DEV_OPERATOR and made.made and made.password
    assert authenticate(runtime, DEV_OPERATOR, made.password).role == OPERATOR
    saved = instance / CONSOLE_ACCOUNT_FILE
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"email": DEV_OPERATOR, "password": made.password}
    with runtime.session() as session:
        [entry] = session.scalars(sa.select(AuditEntry))
    assert (entry.action, entry.interface, entry.targets) == ("users.add", "cli", {"account": DEV_OPERATOR})
    [line] = console_lines(URL, made)
    assert line == (f"Console: {URL}/console/  sign in as {DEV_OPERATOR}, password {made.password}"
                    f"  (made now, kept in {CONSOLE_ACCOUNT_FILE})")

    # The next run: no second account, the same credentials shown.
    again = dev_console(dev_app, {}, instance)
    assert (again.email, again.password, again.made) == (DEV_OPERATOR, made.password, False)
    assert [a.email for a in list_accounts(runtime)] == [DEV_OPERATOR]

    # A password changed since: nothing stale is printed.
    set_password(runtime, DEV_OPERATOR, PASSWORD, actor=TEST_ACTOR)
    changed = dev_console(dev_app, {}, instance)
    assert changed.password is None and "relay users list" in console_lines(URL, changed)[0]


def test_no_account_is_made_where_an_operator_exists_or_in_a_database_url_store(bare_app, tmp_path):
    dev_app = bare_app(RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY)
    instance = tmp_path / "instance"
    elsewhere = dev_console(dev_app, {"DATABASE_URL": "postgresql+psycopg://postgres@db.example/relay"}, instance)
    assert elsewhere.password is None and "DATABASE_URL" in console_lines(URL, elsewhere)[0]
    assert list_accounts(Runtime.of(dev_app)) == []

    make_account(dev_app, "lead@clinic.example", OPERATOR)
    theirs = dev_console(dev_app, {}, instance)
    assert theirs.password is None and not (instance / CONSOLE_ACCOUNT_FILE).exists()
    assert [a.email for a in list_accounts(Runtime.of(dev_app))] == ["lead@clinic.example"]


def test_the_console_is_off_without_a_key(bare_app, tmp_path):
    assert dev_console(bare_app(), {}, tmp_path) is None
    assert console_lines(URL, None) == []


# A real `relay dev` start-up: a loaded machine needs more than the suite's 120 s.
@pytest.mark.timeout(180)
def test_relay_dev_prints_the_console_and_its_credentials_sign_in(tmp_path):
    instance, args = tmp_path / "instance", dev_ports()
    with relay_dev(tmp_path, instance, args) as dev:
        found = re.search(r"Console: (\S+)  sign in as (\S+), password (\S+)  \(made now", dev.shown())
        assert found, dev.shown()
        address, email, password = found.groups()
        assert (address, email) == (f"{dev.url}/console/", DEV_OPERATOR)
        settings = (instance / "dev.env").read_text()
        assert re.search(r"^export RELAY_CONSOLE_SECRET_KEY=\S{32,}$", settings, re.MULTILINE), settings
        assert stat.S_IMODE((instance / "dev.env").stat().st_mode) == 0o600

        with httpx.Client(base_url=dev.url, timeout=10) as browser:
            form = browser.get("/console/sign-in")
            assert form.status_code == 200
            signed_in = browser.post("/console/sign-in", data={
                "email": email, "password": password, "csrf_token": token_of(form.text)})
            assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/console/"
            overview = browser.get("/console/")
            assert overview.status_code == 200 and DEV_OPERATOR in overview.text
        assert dev.stop() == 0
