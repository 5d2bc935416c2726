"""`relay users …`: the console's accounts, through the CLI runner on the real store (SQLite and
PostgreSQL): stored normalised, passwords hashed with scrypt and never shown, each change audited,
sessions ended by a change of password or role and by removal, bad input refused with exit 2."""
from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa

import web.cli.users
from operations import accounts
from relay.models import Account, AuditEntry
from relay.runtime import Runtime
from web.cli import main

PASSWORD = "correct horse battery"


def users(app, *args, input=None):
    return app.test_cli_runner().invoke(main, ["users", *args], input=input)


def stored(app) -> list[Account]:
    with Runtime.of(app).db.session() as session:
        return list(session.scalars(sa.select(Account).order_by(Account.id)))


def audit_rows(app) -> list[AuditEntry]:
    with Runtime.of(app).db.session() as session:
        return list(session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)))


@pytest.fixture
def app(relay_app):
    return relay_app(RELAY_OPERATOR="lead@clinic.example")


def test_an_account_is_stored_normalised_with_a_scrypt_hash_and_signs_in_with_its_password(app, caplog):
    caplog.set_level(logging.DEBUG)
    result = users(app, "add", "  Ann.Operator@Clinic.Example ", "--role", "operator", "--password-stdin",
                   input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert result.output == "added operator ann.operator@clinic.example\n"

    [account] = stored(app)
    assert (account.email, account.role, account.session_version) == ("ann.operator@clinic.example", "operator", 1)
    assert account.password_hash.startswith("scrypt:") and PASSWORD not in account.password_hash
    runtime = Runtime.of(app)
    assert accounts.authenticate(runtime, "ANN.operator@clinic.example", PASSWORD).email == account.email
    assert accounts.authenticate(runtime, account.email, PASSWORD + "x") is None
    assert accounts.authenticate(runtime, "nobody@clinic.example", PASSWORD) is None
    assert PASSWORD not in caplog.text

    [entry] = audit_rows(app)
    assert (entry.actor, entry.interface, entry.address, entry.action, entry.outcome) == (
        "lead@clinic.example", "cli", None, "users.add", "ok")
    assert entry.targets == {"account": "ann.operator@clinic.example"} and entry.details == {"role": "operator"}


def test_password_stdin_takes_one_line_and_strips_only_its_newline(app):
    assert users(app, "add", "a@clinic.example", "--role", "viewer", "--password-stdin",
                 input="  spaced out  \r\nsecond line\n").exit_code == 0
    runtime = Runtime.of(app)
    assert accounts.authenticate(runtime, "a@clinic.example", "  spaced out  ") is not None
    assert accounts.authenticate(runtime, "a@clinic.example", "spaced out") is None


def test_the_password_is_asked_twice_on_a_terminal_and_never_echoed(app, monkeypatch):
    monkeypatch.setattr(web.cli.users, "_on_terminal", lambda: True)
    result = users(app, "add", "b@clinic.example", "--role", "viewer", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output and "Repeat for confirmation" in result.output
    assert accounts.authenticate(Runtime.of(app), "b@clinic.example", PASSWORD) is not None


def test_without_a_terminal_a_password_must_come_from_stdin(app):
    result = users(app, "add", "b@clinic.example", "--role", "viewer", input=f"{PASSWORD}\n")
    assert result.exit_code == 2 and "pass --password-stdin" in result.output
    assert stored(app) == []


@pytest.mark.parametrize("args, stdin, problem", [
    (["add", "c@clinic.example", "--role", "admin", "--password-stdin"], PASSWORD, "'admin' is not one of"),
    (["add", "c@clinic.example", "--password-stdin"], PASSWORD, "Missing option '--role'"),
    (["add", "not-an-email", "--role", "viewer", "--password-stdin"], PASSWORD, "malformed email"),
    (["add", "c@clinic.example", "--role", "viewer", "--password-stdin"], "", "empty password"),
    (["add", "c@clinic.example", "--role", "viewer", "--password-stdin"], "short", "password too short"),
    (["set-role", "c@clinic.example", "boss"], None, "'boss' is not one of"),
])
def test_bad_input_is_exit_code_2_naming_the_problem_and_changes_nothing(app, args, stdin, problem):
    result = users(app, *args, input=None if stdin is None else stdin + "\n")
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert stored(app) == [] and audit_rows(app) == []  # malformed input: nothing was attempted


def test_refusals_of_the_store_are_exit_code_2_and_audited(app):
    assert users(app, "add", "d@clinic.example", "--role", "viewer", "--password-stdin", input=PASSWORD).exit_code == 0
    again = users(app, "add", "D@clinic.example", "--role", "operator", "--password-stdin", input=PASSWORD)
    assert again.exit_code == 2 and "an account for d@clinic.example exists already" in again.output
    for args, stdin in [(["remove", "e@clinic.example"], None), (["set-role", "e@clinic.example", "operator"], None),
                        (["set-password", "e@clinic.example", "--password-stdin"], PASSWORD)]:
        result = users(app, *args, input=stdin)
        assert result.exit_code == 2 and "no account for e@clinic.example" in result.output, result.output

    assert [a.role for a in stored(app)] == ["viewer"]
    assert [(e.action, e.targets, e.outcome, e.reason) for e in audit_rows(app)] == [
        ("users.add", {"account": "d@clinic.example"}, "ok", None),
        ("users.add", {"account": "d@clinic.example"}, "refused", "existing account"),
        ("users.remove", {"account": "e@clinic.example"}, "refused", "unknown account"),
        ("users.set-role", {"account": "e@clinic.example"}, "refused", "unknown account"),
        ("users.set-password", {"account": "e@clinic.example"}, "refused", "unknown account"),
    ]


def test_a_new_password_or_role_or_removal_ends_the_sessions_signed_in_before(app):
    runtime = Runtime.of(app)
    assert users(app, "add", "f@clinic.example", "--role", "viewer", "--password-stdin", input=PASSWORD).exit_code == 0
    first = accounts.authenticate(runtime, "f@clinic.example", PASSWORD)
    assert accounts.signed_in(runtime, first.id, first.session_version) == first

    result = users(app, "set-password", "F@clinic.example", "--password-stdin", input="another password\n")
    assert result.exit_code == 0 and result.output == "new password set for f@clinic.example\n"
    assert accounts.signed_in(runtime, first.id, first.session_version) is None
    assert accounts.authenticate(runtime, "f@clinic.example", PASSWORD) is None
    second = accounts.authenticate(runtime, "f@clinic.example", "another password")
    assert second.session_version == first.session_version + 1

    same = users(app, "set-role", "f@clinic.example", "viewer")
    assert same.exit_code == 0 and same.output == "f@clinic.example is a viewer\n"
    assert accounts.signed_in(runtime, second.id, second.session_version) == second  # nothing changed
    assert users(app, "set-role", "f@clinic.example", "operator").output == "f@clinic.example is an operator\n"
    assert accounts.signed_in(runtime, second.id, second.session_version) is None
    third = accounts.authenticate(runtime, "f@clinic.example", "another password")
    assert (third.role, third.session_version) == ("operator", second.session_version + 1)

    assert users(app, "remove", "f@clinic.example").output == "removed f@clinic.example\n"
    assert accounts.signed_in(runtime, third.id, third.session_version) is None
    assert stored(app) == []
    assert users(app, "add", "f@clinic.example", "--role", "viewer", "--password-stdin", input=PASSWORD).exit_code == 0
    assert accounts.signed_in(runtime, third.id, third.session_version) is None  # a new account, not the old one

    assert [(e.action, e.details, e.outcome) for e in audit_rows(app)][1:5] == [
        ("users.set-password", {}, "ok"),
        ("users.set-role", {"role": "viewer", "was": "viewer"}, "ok"),
        ("users.set-role", {"role": "operator", "was": "viewer"}, "ok"),
        ("users.remove", {"role": "operator"}, "ok"),
    ]


def test_list_shows_emails_and_roles_and_never_a_hash(app):
    assert "no account" in users(app, "list").output
    for email, role in [("zed@clinic.example", "viewer"), ("amy@clinic.example", "operator")]:
        assert users(app, "add", email, "--role", role, "--password-stdin", input=PASSWORD).exit_code == 0

    listed = json.loads(users(app, "list", "--json").output)
    assert [(a["email"], a["role"]) for a in listed] == [("amy@clinic.example", "operator"),
                                                         ("zed@clinic.example", "viewer")]
    assert set(listed[0]) == {"email", "role", "created_at", "updated_at"}
    text = users(app, "list").output
    assert "amy@clinic.example" in text and "operator" in text and "scrypt" not in text
