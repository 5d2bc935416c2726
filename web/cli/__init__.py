"""The `relay` command: a Flask CLI group bound to the base app factory. It sits on top of
everything: operator commands may use the store, the queue and each destination's package."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from relay.app import create_base_app
from relay.config import ConfigError, load_env_file
from relay.runtime import Runtime
from web.cli.audit import audit_group
from web.cli.backfill import backfill_command
from web.cli.destinations import destinations_group
from web.cli.doctor import doctor_command
from web.cli.events import events_group
from web.cli.keys import keys_group
from web.cli.send import send_command
from web.cli.sparkloop import sparkloop_group
from web.cli.subscribers import subscribers_group
from web.cli.support import store_errors
from web.cli.users import users_group
from web.cli.worker import worker_command


class BadConfiguration(click.ClickException):
    exit_code = 2


class RelayGroup(FlaskGroup):
    """Flask's CLI group (the app factory, `with_appcontext`, its test runner) with Relay's own
    options only: none of Flask's applies (Relay builds its own app, -A/--app; has no debug mode,
    --debug; reads .env itself, -e/--env-file; --version is Relay's). Every command starts by
    reading `.env` (relay.config.load_env_file, as every Relay process does). A configuration
    error (its message names the variable) is one line and exit code 2 for every command, as for
    any other bad input; `relay doctor` reports it as a check."""

    def __init__(self, **kwargs):
        # No FLASK_* variables for options either: an option is given on the command line.
        kwargs.setdefault("context_settings", {"auto_envvar_prefix": None})
        own = list(kwargs.pop("params", None) or ())
        super().__init__(load_dotenv=False, add_version_option=False, **kwargs)
        self.params = own

    def invoke(self, ctx):
        load_env_file()
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise BadConfiguration(str(exc)) from None

    # Relay's commands are all registered here: listing or finding one builds no app (Flask's
    # group would, for the app's own commands, and print a traceback for a bad configuration).
    def get_command(self, ctx, name):
        return click.Group.get_command(self, ctx, name)

    def list_commands(self, ctx):
        return click.Group.list_commands(self, ctx)


@click.group(
    cls=RelayGroup,
    create_app=create_base_app,
    add_default_commands=False,
    epilog="Settings are environment variables; a .env file in the working directory "
    "adds those the environment lacks (an empty value means the default).",
)
@click.version_option(
    package_name="relay", prog_name="relay", message="%(prog)s %(version)s", help="Print Relay's version and exit."
)
def main():
    """Relay: SparkLoop webhooks delivered to Sprig and Spruce."""


@main.group("dev", cls=click.Group, invoke_without_command=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), help="Port for the web app.")
@click.option(
    "--sandbox-port",
    default=8025,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port for the vendor sandbox (used for vendors without credentials).",
)
@click.option(
    "--redis-port",
    default=8026,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port for the Redis relay dev serves from memory when REDIS_URL is not set.",
)
@click.option(
    "--fresh", is_flag=True, help="Start empty: delete dev's SQLite store and the sandbox's saved records (asks first)."
)
@click.option("--yes", is_flag=True, help="With --fresh: do not ask.")
@click.pass_context
def dev_command(ctx: click.Context, port: int, sandbox_port: int, redis_port: int, fresh: bool, yes: bool):
    """Run Relay locally: web app, worker with the sweep, and the vendor sandbox.

    The store (SQLite under instance/) and the sandbox's records (instance/sandbox-state.json)
    outlive a restart; --fresh empties both. Other relay commands reach the running one after
    sourcing instance/dev.env."""
    if ctx.invoked_subcommand is not None:
        return
    from web.cli.dev import run_dev

    run_dev(port=port, sandbox_port=sandbox_port, redis_port=redis_port, fresh=fresh, yes=yes)


@dev_command.command("seed-subscribers")
@click.argument("count", type=click.IntRange(1, 10_000))
@click.option(
    "--sandbox-port",
    default=8025,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="The running sandbox's port (relay dev's --sandbox-port).",
)
def dev_seed_subscribers(count: int, sandbox_port: int):
    """Add COUNT made-up subscribers to the sandbox's SparkLoop list (created over the last 12
    hours, some referred by others), for `relay backfill --since 1d` to read."""
    from web.cli.dev import seed_subscribers

    held = seed_subscribers(count, sandbox_port)
    click.echo(
        f"added {count} subscribers to the sandbox's SparkLoop list ({held} in all); "
        "then: relay backfill --since 1d  (after . instance/dev.env)"
    )


@main.group("db")
def db_group():
    """Database schema commands."""


@db_group.command("upgrade")
@with_appcontext
@store_errors
def db_upgrade():
    """Apply pending migrations (run on every release)."""
    Runtime.of(current_app).db.upgrade()
    click.echo("database is up to date")


main.add_command(events_group)
main.add_command(keys_group)
main.add_command(backfill_command)
main.add_command(worker_command)
main.add_command(subscribers_group)
main.add_command(sparkloop_group)
main.add_command(doctor_command)
main.add_command(send_command)
main.add_command(users_group)
main.add_command(audit_group)
main.add_command(destinations_group)
