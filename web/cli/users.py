"""`relay users …`: the console's accounts (operations.accounts). A password comes from a hidden
prompt (asked twice) or, with --password-stdin, from one line of standard input (its newline
stripped), never from an argument (which `ps` and shell history would show); it is never printed.
Bad input or a refused change is one line and exit code 2."""

from __future__ import annotations

import functools
import json
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from operations import accounts
from operations.accounts import ROLES, AccountError
from relay.runtime import Runtime
from web.cli.audit import cli_actor
from web.cli.support import console, store_errors


class Refused(click.ClickException):
    exit_code = 2


@click.group("users")
def users_group():
    """Accounts that sign in to the console: viewers see (personal data masked), operators also act."""


password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from one line of standard input (for scripts)."
)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.removesuffix("\n").removesuffix("\r")
    if not _on_terminal():
        raise click.UsageError("not on a terminal: pass --password-stdin and give the password on standard input")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _on_terminal() -> bool:
    return sys.stdin.isatty()


def _refusals(command):
    """An AccountError is exit code 2 with its message."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AccountError as exc:
            raise Refused(str(exc)) from None

    return wrapper


@users_group.command("add")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(ROLES), help="viewer: sees, masked; operator: also acts.")
@password_stdin
@with_appcontext
@store_errors
@_refusals
def users_add(email: str, role: str, password_stdin: bool):
    """Add an account (asks for its password)."""
    runtime = Runtime.of(current_app)
    email = accounts.normal_email(email)  # refused before a password is asked for
    account = accounts.add_account(runtime, email, role, _password(password_stdin), actor=cli_actor(runtime))
    click.echo(f"added {account.role} {account.email}")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@with_appcontext
@store_errors
def users_list(as_json: bool):
    """List the accounts: email, role, when added and last changed."""
    found = accounts.list_accounts(Runtime.of(current_app))
    if as_json:
        click.echo(json.dumps([a.as_dict() for a in found], indent=2))
        return
    if not found:
        click.echo("no account: add one with `relay users add EMAIL --role operator`")
        return
    from rich.table import Table

    table = Table("email", "role", "added (UTC)", "changed (UTC)")
    for a in found:
        table.add_row(a.email, a.role, a.created_at.isoformat()[:19], a.updated_at.isoformat()[:19])
    console().print(table)


@users_group.command("remove")
@click.argument("email")
@with_appcontext
@store_errors
@_refusals
def users_remove(email: str):
    """Remove an account; its console sessions end."""
    runtime = Runtime.of(current_app)
    accounts.remove_account(runtime, email, actor=cli_actor(runtime))
    click.echo(f"removed {accounts.normal_email(email)}")


@users_group.command("set-password")
@click.argument("email")
@password_stdin
@with_appcontext
@store_errors
@_refusals
def users_set_password(email: str, password_stdin: bool):
    """Give an account a new password (asks for it); its console sessions end."""
    runtime = Runtime.of(current_app)
    email = accounts.normal_email(email)
    accounts.set_password(runtime, email, _password(password_stdin), actor=cli_actor(runtime))
    click.echo(f"new password set for {email}")


@users_group.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice(ROLES))
@with_appcontext
@store_errors
@_refusals
def users_set_role(email: str, role: str):
    """Make an account a viewer or an operator; its console sessions end when the role changes."""
    runtime = Runtime.of(current_app)
    account = accounts.set_role(runtime, email, role, actor=cli_actor(runtime))
    click.echo(f"{account.email} is {'an' if role == 'operator' else 'a'} {account.role}")
