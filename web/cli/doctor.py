"""`relay doctor`: is this deploy able to work? One line per check (operations.doctor has them),
in the order a broken deploy is best diagnosed, each failure with what to do. Exit 0 when nothing
failed, 1 otherwise; a vendor without credentials is "not configured", which is no failure."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from flask import Flask
from flask.cli import ScriptInfo

from operations import doctor
from relay.app import webhook_token_problem
from relay.checks import FAILED, NOT_CONFIGURED, OK, SKIPPED, WARNING, Check, failed, passed
from relay.config import ConfigError
from relay.runtime import Runtime
from web.cli.support import console

MARKS = {
    OK: "[green]✔[/]",
    WARNING: "[bold yellow]![/]",
    FAILED: "[bold red]✘[/]",
    NOT_CONFIGURED: "[dim]–[/]",
    SKIPPED: "[dim]–[/]",
}


def check_configuration(info: ScriptInfo) -> tuple[Check, Flask | None]:
    """The app, built as every process builds it (relay.config validates each variable), and
    what the web process requires on top."""
    name = "configuration"
    try:
        app = info.load_app()
    except ConfigError as exc:  # its message names the variable and quotes no secret
        return failed(name, str(exc), "fix that variable; every process refuses to start until then"), None
    problem = webhook_token_problem(app.config["RELAY"])
    if problem:
        return failed(
            name,
            f"the web process refuses to start: {problem}",
            "set SPARKLOOP_WEBHOOK_TOKEN to the token in SparkLoop's webhook settings",
        ), app
    return passed(name, "every variable is valid"), app


def run_checks(info: ScriptInfo, send_test_alert: bool = False) -> list[Check]:
    configuration, app = check_configuration(info)
    if app is None:
        names = [*doctor.check_names(None), *(doctor.ALERT_SINK_CHECKS.values() if send_test_alert else ())]
        return [configuration, *(Check(name, SKIPPED, "the configuration is not valid") for name in names)]
    with app.app_context():
        runtime = Runtime.of(app)
        checks = [configuration, *doctor.run_checks(runtime, app.extensions["celery"])]
        return checks + (doctor.send_test_alerts(runtime) if send_test_alert else [])


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON for scripts.")
@click.option(
    "--send-test-alert",
    is_flag=True,
    help="Also post a test alert to each configured alert sink (webhook, Slack, Sentry) and say how each answered.",
)
@click.pass_context
def doctor_command(ctx: click.Context, as_json: bool, send_test_alert: bool):
    """Check that this deploy can work, one line per check.

    In order: the configuration (the validation every process runs), the database (reachable,
    migrations current), the payload keys (every key id the store uses is in RELAY_PAYLOAD_KEYS),
    the broker, each destination's own checks (Sprig's key; Spruce's token and
    SPRUCE_NOTE_MEMBER_IDS), the SparkLoop key
    (when SPARKLOOP_API_KEY is set) and Relay's webhook (when RELAY_PUBLIC_URL is set too),
    whether the sweep ran recently (beat is alive), and the last daily retention run. Each vendor
    check is one harmless read with a 5 s timeout. A vendor without credentials is "not
    configured", not a failure; a warning (!) deserves a look but fails nothing. With
    --send-test-alert, a line per alert sink: a test alert posted to it, and its answer.

    Exit code 0 when no check failed, 1 otherwise. No token or key is printed.
    """
    checks = run_checks(ctx.ensure_object(ScriptInfo), send_test_alert)
    healthy = all(check.status != FAILED for check in checks)
    if as_json:
        click.echo(json.dumps({"ok": healthy, "checks": [asdict(check) for check in checks]}, indent=2))
    else:
        _print_table(checks)
    ctx.exit(0 if healthy else 1)


def _print_table(checks: list[Check]) -> None:
    from rich.markup import escape
    from rich.table import Column, Table

    table = Table(
        "", Column("check", no_wrap=True), Column("result", overflow="fold"), Column("what to do", overflow="fold")
    )
    for check in checks:
        detail = f"not configured: {check.detail}" if check.status == NOT_CONFIGURED else check.detail
        table.add_row(MARKS[check.status], check.name, escape(detail), escape(check.fix or ""))
    console().print(table)
