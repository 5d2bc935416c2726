"""`relay doctor`: is this deploy able to work? One line per check, in the order a broken deploy
is best diagnosed, each failure with what to do. Exit 0 when nothing failed, 1 otherwise; a
vendor without credentials is "not configured", which is no failure.

Vendor checks are one harmless read each, with a short timeout, straight to the vendor: they
neither wait behind the shared throttle nor move the breaker (a wrong key tried by hand must not
put the workers' calls on hold). No line carries a credential, a URL's password or a person.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import click
import redis
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask.cli import ScriptInfo

from operations.keys import stored_key_ids
from relay.app import webhook_token_problem
from relay.config import Config, ConfigError
from relay.db import MIGRATIONS
from relay.queue import RETENTION_INTERVAL, SWEEP_INTERVAL
from relay.shared_redis import redis_client
from web.cli.support import console, human_duration
from workers.outcomes import ErrorKind
from workers.retention import Ages, last_run
from workers.sparkloop.client import SparkLoopClient
from workers.sparkloop.webhooks import API_EVENTS, DASHBOARD_ONLY_EVENTS, find, https_problem, relay_webhook_url
from workers.sprig.client import SprigClient
from workers.spruce.organization import SpruceOrganizationClient
from workers.sweep import LAST_SWEPT
from workers.vendor_errors import VendorError

VENDOR_TIMEOUT_S = 5.0
BROKER_TIMEOUT_S = 3.0
# Beat schedules a sweep every SWEEP_INTERVAL; a few missed in a row is no hiccup.
SWEEP_STALE_S = 6 * SWEEP_INTERVAL.total_seconds()
# Beat sends a retention run every RETENTION_INTERVAL; a few hours late is no sign of trouble.
RETENTION_STALE_S = RETENTION_INTERVAL.total_seconds() + 6 * 3600
# A user id no one has: Sprig answers 404 to an accepted key, 403 to any other.
SPRIG_PROBE_USER = "relay-doctor-probe"

OK, WARNING, FAILED, NOT_CONFIGURED, SKIPPED = "ok", "warning", "failed", "not_configured", "skipped"
# A warning works but deserves a look (exit code 0); a failure is why the deploy cannot work.
MARKS = {
    OK: "[green]✔[/]",
    WARNING: "[bold yellow]![/]",
    FAILED: "[bold red]✘[/]",
    NOT_CONFIGURED: "[dim]–[/]",
    SKIPPED: "[dim]–[/]",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


def passed(name: str, detail: str) -> Check:
    return Check(name, OK, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, FAILED, detail, fix)


def warned(name: str, detail: str, fix: str) -> Check:
    return Check(name, WARNING, detail, fix)


# --- configuration, store, broker, beat -------------------------------------------------------


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


def check_database(app: Flask) -> Check:
    name = "database"
    db = app.extensions["relay.db"]
    chatty = logging.getLogger("alembic.runtime.migration")  # "Context impl …" at INFO: noise here
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        with db.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # any driver error: its class says what, its text may quote the URL
        return failed(name, f"unreachable ({type(exc).__name__})", "check DATABASE_URL and that the database is up")
    finally:
        chatty.setLevel(level)
    script = ScriptDirectory(str(MIGRATIONS))
    heads = set(script.get_heads())
    if current == heads:
        return passed(name, f"reachable, migrations current ({', '.join(sorted(heads))})")
    known = {revision.revision for revision in script.walk_revisions()}
    if current - known:
        return failed(
            name,
            f"at revision {', '.join(sorted(current))}, which this release does not know",
            "deploy the release that made it, or restore a database of this release",
        )
    at = ", ".join(sorted(current)) or "no revision (empty)"
    return failed(name, f"migrations pending: at {at}, latest {', '.join(sorted(heads))}", "run `relay db upgrade`")


def check_broker(app: Flask) -> Check:
    name = "broker"
    config: Config = app.config["RELAY"]
    try:
        with app.extensions["celery"].connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # kombu raises several unrelated types; the class says which
        return failed(name, f"unreachable ({type(exc).__name__})", "check REDIS_URL and that Redis is up")
    if config.redis_url is None:
        return passed(name, "the embedded folder broker (no REDIS_URL: one machine only)")
    return passed(name, "Redis (REDIS_URL) answers")


def check_sweep(config: Config, now: float | None = None) -> Check:
    name = "sweep (beat)"
    if config.redis_url is None:
        return Check(name, SKIPPED, "no REDIS_URL: the sweep's mark stays inside the worker process")
    try:
        raw = redis_client(config.redis_url).get(LAST_SWEPT)
    except redis.RedisError as exc:
        return failed(name, f"cannot tell: Redis unreachable ({type(exc).__name__})", "check REDIS_URL")
    fix = "start beat (the Procfile's `beat` process) and at least one worker: beat schedules, a worker sweeps"
    if raw is None:
        return failed(name, "no sweep has finished since Redis was last emptied", fix)
    age = max((now or time.time()) - float(raw), 0.0)
    if age > SWEEP_STALE_S:
        return failed(
            name,
            f"last sweep finished {human_duration(age)} ago (beat runs one every {SWEEP_INTERVAL.total_seconds():g} s)",
            fix,
        )
    return passed(name, f"last sweep finished {human_duration(age)} ago")


def check_payload_keys(app: Flask, database: Check) -> Check:
    """Every key id the store's sealed payloads and errors name is one RELAY_PAYLOAD_KEYS holds
    here: a process without it cannot read (nor deliver) those events. Key ids are hashes of the
    keys (relay.sealing.key_id), safe to print."""
    name = "payload keys"
    if database.status != OK:
        return Check(name, SKIPPED, "the database check did not pass")
    db = app.extensions["relay.db"]
    try:
        stored = stored_key_ids(db.engine)
    except Exception as exc:  # any driver error: its class says what
        return failed(
            name,
            f"cannot tell: the store could not be read ({type(exc).__name__})",
            "check DATABASE_URL and that the database is up",
        )
    held = db.sealer.key_ids
    missing = sorted(stored - set(held))
    if missing:
        holds = f"it holds {', '.join(held)}" if held else "RELAY_PAYLOAD_KEYS is not set"
        return failed(
            name,
            f"events are sealed with key id{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}, which this process lacks ({holds}): their deliveries "
            "wait and their payloads cannot be read",
            "add the key(s) with these ids back to RELAY_PAYLOAD_KEYS on every process (web, "
            "worker, beat) and restart them; `relay keys status` counts events per key id",
        )
    if not stored:
        return passed(name, "no stored payload is encrypted" + ("" if held else " (RELAY_PAYLOAD_KEYS is not set)"))
    return passed(name, f"RELAY_PAYLOAD_KEYS holds every key id the store uses ({', '.join(sorted(stored))})")


def check_retention(config: Config, now: float | None = None) -> Check:
    """Beat's daily purge (workers.retention): when it last ran, and how that ended."""
    name = "retention"
    if not config.retention_purge_daily:
        return Check(
            name,
            NOT_CONFIGURED,
            "RELAY_RETENTION_PURGE=off: events are kept until `relay events purge --retention` runs (schedule it)",
        )
    if config.redis_url is None:
        return Check(name, SKIPPED, "no REDIS_URL: the last run is recorded inside the worker process")
    try:
        run = last_run(redis_client(config.redis_url))
    except redis.RedisError as exc:
        return failed(name, f"cannot tell: Redis unreachable ({type(exc).__name__})", "check REDIS_URL")
    if run is None:
        # A new deploy (or one whose Redis was emptied) before its first 03:00 UTC: beat being
        # alive is the sweep line's to tell.
        return Check(
            name,
            SKIPPED,
            "no run recorded yet: beat sends one every day at 03:00 UTC "
            "(or run `relay events purge --retention --yes`)",
        )
    age = max((now or time.time()) - run["finished_at"], 0.0)
    when = f"last run {human_duration(age)} ago ({run.get('by') or 'beat'})"
    if run.get("error"):
        return failed(
            name,
            f"{when} failed ({run['error']})",
            "see the worker's log (logger relay.retention); then run `relay events purge --retention --yes`",
        )
    ages = Ages.configured(config)
    kept = (
        f"finished events older than {human_duration(ages.finished_s)}, failed and invalid older than "
        f"{human_duration(ages.failed_s)}"
    )
    detail = f"{when}: purged {run.get('purged', 0)} ({kept})" + (
        "" if run.get("complete", True) else "; more were left for the next run"
    )
    if age > RETENTION_STALE_S:
        return warned(
            name,
            detail,
            "beat sends one every day at 03:00 UTC: check beat and the workers (the "
            "sweep line), and the worker's log (logger relay.retention)",
        )
    return passed(name, detail)


# --- vendors --------------------------------------------------------------------------------


def check_sprig(config: Config) -> Check:
    name = "Sprig key"
    if not config.sprig_api_key:
        return Check(name, NOT_CONFIGURED, "SPRIG_API_KEY is not set: nothing is delivered to Sprig")
    with SprigClient(config.sprig_api_url, config.sprig_api_key, timeout=VENDOR_TIMEOUT_S) as client:
        try:
            client.get_user(SPRIG_PROBE_USER)
        except VendorError as err:
            if err.kind == ErrorKind.AUTH:
                return failed(
                    name,
                    f"Sprig refused SPRIG_API_KEY ({err.status})",
                    "a wrong key, or the key of the other Sprig environment (production vs "
                    "development): copy the key of the environment Relay writes to from Sprig's "
                    "Integrations → Data Import API",
                )
            return failed(name, str(err), "check SPRIG_API_URL and Sprig's status; then run doctor again")
    return passed(name, "accepted (a read of a user)")


def check_spruce(config: Config) -> list[Check]:
    token, members = "Spruce token", "Spruce note members"
    if not config.spruce_api_token:
        return [
            Check(token, NOT_CONFIGURED, "SPRUCE_API_TOKEN is not set: nothing is delivered to Spruce"),
            Check(members, NOT_CONFIGURED, "no Spruce token"),
        ]
    with SpruceOrganizationClient(config.spruce_api_url, config.spruce_api_token, timeout=VENDOR_TIMEOUT_S) as client:
        try:
            organization = client.organization()
        except VendorError as err:
            return [_spruce_failure(token, err), Check(members, SKIPPED, "the token was not accepted")]
        first = passed(token, f"accepted (organization {organization.get('id', '?')})")
        wanted = config.spruce_note_member_ids
        if not wanted:
            return [
                first,
                warned(
                    members,
                    "SPRUCE_NOTE_MEMBER_IDS is not set: each note is visible to its creator (Relay's API user) only",
                    "set SPRUCE_NOTE_MEMBER_IDS to the teammates or teams (entity_…) who should read the notes",
                ),
            ]
        try:
            listed = {m.get("id"): m for m in client.members() if isinstance(m, dict)}
        except VendorError as err:
            return [first, _spruce_failure(members, err)]
    strangers = [m for m in wanted if m not in listed]
    suspended = [m for m in wanted if listed.get(m, {}).get("isSuspended") is True]
    if strangers:
        return [
            first,
            failed(
                members,
                f"not members of the organization: {', '.join(strangers)}",
                "fix SPRUCE_NOTE_MEMBER_IDS: teammate or team ids (entity_…) from GET /organization/members",
            ),
        ]
    if suspended:
        return [
            first,
            failed(
                members,
                f"suspended teammates, who get no new messages: {', '.join(suspended)}",
                "remove them from SPRUCE_NOTE_MEMBER_IDS, or unsuspend them in Spruce",
            ),
        ]
    return [first, passed(members, f"all {len(wanted)} are members of the organization")]


def _spruce_failure(name: str, err: VendorError) -> Check:
    if err.kind == ErrorKind.AUTH:
        return failed(
            name,
            f"Spruce refused SPRUCE_API_TOKEN ({err.status})",
            "generate credentials under Spruce's Settings → API Access; the token is base64(access_id:secret_key)",
        )
    return failed(name, str(err), "check SPRUCE_API_URL and Spruce's status; then run doctor again")


def check_sparkloop(config: Config) -> list[Check]:
    """The key whenever it is set; Relay's webhook when RELAY_PUBLIC_URL says where it is."""
    key, hook = "SparkLoop key", "SparkLoop webhook"
    if not config.sparkloop_api_key:
        why = "SPARKLOOP_API_KEY is not set"
        return [
            Check(key, NOT_CONFIGURED, f"{why}: `relay backfill` and `relay sparkloop webhooks` need it"),
            Check(hook, NOT_CONFIGURED, why),
        ]
    with SparkLoopClient(config.sparkloop_api_url, config.sparkloop_api_key, timeout=VENDOR_TIMEOUT_S) as client:
        try:
            webhooks = client.list_webhooks()
        except VendorError as err:
            if err.kind == ErrorKind.AUTH:
                first = failed(
                    key,
                    f"SparkLoop refused SPARKLOOP_API_KEY ({err.status})",
                    "copy the API key from SparkLoop's Settings → Integrations page",
                )
            else:
                first = failed(key, str(err), "check SPARKLOOP_API_URL and SparkLoop's status; then run doctor again")
            return [first, Check(hook, SKIPPED, "the webhooks could not be listed")]
    first = passed(key, "accepted (a list of webhooks)")
    if not config.public_url:
        return [
            first,
            Check(
                hook, NOT_CONFIGURED, "RELAY_PUBLIC_URL is not set: set it to check that SparkLoop sends to this Relay"
            ),
        ]
    # SparkLoop sends only to https (register refuses anything else): "register it" would not help.
    if problem := https_problem(config.public_url):
        return [
            first,
            failed(
                hook,
                f"RELAY_PUBLIC_URL is not https:// ({problem})",
                "set RELAY_PUBLIC_URL to the https:// base URL SparkLoop reaches",
            ),
        ]
    url = relay_webhook_url(config.public_url)
    webhook = find(webhooks, url)
    if webhook is None:
        return [first, failed(hook, f"none registered for {url}", "run `relay sparkloop webhooks register`")]
    if webhook.missing_api_events:
        return [
            first,
            failed(
                hook,
                f"{webhook.uuid} does not send {', '.join(webhook.missing_api_events)}",
                "run `relay sparkloop webhooks register` (it switches them on)",
            ),
        ]
    return [
        first,
        passed(
            hook,
            f"{webhook.uuid} sends {', '.join(API_EVENTS)}; check "
            f"{', '.join(DASHBOARD_ONLY_EVENTS)} in SparkLoop's dashboard (the API cannot)",
        ),
    ]


# --- the command ----------------------------------------------------------------------------


def run_checks(info: ScriptInfo) -> list[Check]:
    configuration, app = check_configuration(info)
    if app is None:
        rest = (
            "database",
            "payload keys",
            "broker",
            "Sprig key",
            "Spruce token",
            "Spruce note members",
            "SparkLoop key",
            "SparkLoop webhook",
            "sweep (beat)",
            "retention",
        )
        return [configuration, *(Check(name, SKIPPED, "the configuration is not valid") for name in rest)]
    config: Config = app.config["RELAY"]
    steps: list[Callable[[], Check | list[Check]]] = [
        lambda: check_broker(app),
        lambda: check_sprig(config),
        lambda: check_spruce(config),
        lambda: check_sparkloop(config),
        lambda: check_sweep(config),
        lambda: check_retention(config),
    ]
    with app.app_context():
        database = check_database(app)
        checks = [configuration, database, check_payload_keys(app, database)]
        for step in steps:
            result = step()
            checks.extend(result if isinstance(result, list) else [result])
    return checks


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON for scripts.")
@click.pass_context
def doctor_command(ctx: click.Context, as_json: bool):
    """Check that this deploy can work, one line per check.

    In order: the configuration (the validation every process runs), the database (reachable,
    migrations current), the payload keys (every key id the store uses is in RELAY_PAYLOAD_KEYS),
    the broker, the Sprig key, the Spruce token and SPRUCE_NOTE_MEMBER_IDS, the SparkLoop key
    (when SPARKLOOP_API_KEY is set) and Relay's webhook (when RELAY_PUBLIC_URL is set too),
    whether the sweep ran recently (beat is alive), and the last daily retention run. Each vendor
    check is one harmless read with a 5 s timeout. A vendor without credentials is "not
    configured", not a failure; a warning (!) deserves a look but fails nothing.

    Exit code 0 when no check failed, 1 otherwise. No token or key is printed.
    """
    checks = run_checks(ctx.ensure_object(ScriptInfo))
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
