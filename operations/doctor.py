"""`relay doctor`'s checks, as plain functions of the process's runtime: is this deploy able to
work? In the order a broken deploy is best diagnosed: the database, the payload keys, the broker,
each destination's own probe (workers/<vendor>/, from the registry), SparkLoop, beat's sweep and
the retention run. A vendor without credentials is "not configured", which is no failure.

Vendor checks are one harmless read each, with a short timeout, straight to the vendor: they
neither wait behind the shared throttle nor move the breaker. No line carries a credential, a
URL's password or a person.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import cast

import redis

from operations.keys import stored_key_ids
from relay.checks import NOT_CONFIGURED, OK, SKIPPED, Check, failed, passed, warned
from relay.config import Config
from relay.db import MIGRATIONS
from relay.durations import human_duration
from relay.models import utcnow
from relay.queue import RETENTION_INTERVAL, SWEEP_INTERVAL
from relay.runtime import Runtime
from workers.alerts import SENTRY, SLACK, TEST, WEBHOOK, Alert, SinkError, console_url, record_sent, send
from workers.outcomes import ErrorKind
from workers.retention import Ages, last_run
from workers.sparkloop.client import SparkLoopClient
from workers.sparkloop.webhooks import API_EVENTS, DASHBOARD_ONLY_EVENTS, find, https_problem, relay_webhook_url
from workers.sweep import LAST_SWEPT
from workers.vendor_errors import VendorError

VENDOR_TIMEOUT_S = 5.0
BROKER_TIMEOUT_S = 3.0
# Beat schedules a sweep every SWEEP_INTERVAL; a few missed in a row is no hiccup.
SWEEP_STALE_S = 6 * SWEEP_INTERVAL.total_seconds()
# Beat sends a retention run every RETENTION_INTERVAL; a few hours late is no sign of trouble.
RETENTION_STALE_S = RETENTION_INTERVAL.total_seconds() + 6 * 3600
SPARKLOOP_CHECKS = ("SparkLoop key", "SparkLoop webhook")
# `relay doctor --send-test-alert`: a line per alert sink, after the other checks.
ALERT_SINK_CHECKS = {WEBHOOK: "alert webhook", SLACK: "alert Slack", SENTRY: "alert Sentry"}
_SINK_SETTINGS = {WEBHOOK: "RELAY_ALERT_WEBHOOK_URL", SLACK: "RELAY_ALERT_SLACK_URL", SENTRY: "SENTRY_DSN"}
_SINK_FIXES = {
    WEBHOOK: "check RELAY_ALERT_WEBHOOK_URL, and that the receiver is up and verifies with RELAY_ALERT_WEBHOOK_SECRET",
    SLACK: "check RELAY_ALERT_SLACK_URL: the incoming webhook's URL in Slack's app settings (a removed one "
    "answers 403 or 404)",
}


def check_names(config: Config | None) -> list[str]:
    """Every check after the configuration's, in order (`config` None: the installed destinations)."""
    from relay.destinations import Registry

    destinations = config.destinations if config else Registry.discover()
    probes = [name for destination in destinations.values() for name in destination.checks]
    return ["database", "payload keys", "broker", *probes, *SPARKLOOP_CHECKS, "sweep (beat)", "retention"]


def run_checks(runtime: Runtime, celery_app) -> list[Check]:
    """Every check after the configuration's (the interface that built `runtime` made that one)."""
    config = runtime.config
    steps: list[Callable[[], Check | list[Check]]] = [
        lambda: check_broker(celery_app, config),
        *(
            (lambda destination=destination: destination.probe(config, VENDOR_TIMEOUT_S))
            for destination in config.destinations.values()
        ),
        lambda: check_sparkloop(config),
        lambda: check_sweep(runtime),
        lambda: check_retention(runtime),
    ]
    database = check_database(runtime)
    checks = [database, check_payload_keys(runtime, database)]
    for step in steps:
        result = step()
        checks.extend(result if isinstance(result, list) else [result])
    return checks


def check_database(runtime: Runtime) -> Check:
    # Imported here: Alembic costs every `relay` command (and every process) a second to import.
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    name = "database"
    db = runtime.db
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


def check_broker(celery_app, config: Config) -> Check:
    name = "broker"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # kombu raises several unrelated types; the class says which
        return failed(name, f"unreachable ({type(exc).__name__})", "check REDIS_URL and that Redis is up")
    if config.redis_url is None:
        return passed(name, "the embedded folder broker (no REDIS_URL: one machine only)")
    return passed(name, "Redis (REDIS_URL) answers")


def check_sweep(runtime: Runtime, now: float | None = None) -> Check:
    name, config = "sweep (beat)", runtime.config
    if config.redis_url is None:
        return Check(name, SKIPPED, "no REDIS_URL: the sweep's mark stays inside the worker process")
    try:
        raw = cast("bytes | None", runtime.redis.get(LAST_SWEPT))  # redis-py types async results too
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


def check_payload_keys(runtime: Runtime, database: Check) -> Check:
    """Every key id the store's sealed payloads and errors name is one RELAY_PAYLOAD_KEYS holds
    here: a process without it cannot read (nor deliver) those events. Key ids are hashes of the
    keys (relay.sealing.key_id), safe to print."""
    name = "payload keys"
    if database.status != OK:
        return Check(name, SKIPPED, "the database check did not pass")
    db = runtime.db
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


def check_retention(runtime: Runtime, now: float | None = None) -> Check:
    """Beat's daily purge (workers.retention): when it last ran, and how that ended."""
    name, config = "retention", runtime.config
    if not config.retention_purge_daily:
        return Check(
            name,
            NOT_CONFIGURED,
            "RELAY_RETENTION_PURGE=off: events are kept until `relay events purge --retention` runs (schedule it)",
        )
    if config.redis_url is None:
        return Check(name, SKIPPED, "no REDIS_URL: the last run is recorded inside the worker process")
    try:
        run = last_run(runtime.redis)
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


def check_sparkloop(config: Config) -> list[Check]:
    """The key whenever it is set; Relay's webhook when RELAY_PUBLIC_URL says where it is."""
    key, hook = SPARKLOOP_CHECKS
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


def send_test_alerts(runtime: Runtime) -> list[Check]:
    """A test alert posted to each configured alert sink at once (not through a worker), and how
    each answered. Sentry's client sends in the background: the line says it was handed over."""
    config = runtime.config
    now = utcnow().isoformat(timespec="seconds")
    alert = Alert(
        id=f"alert_test_{secrets.token_hex(8)}",
        type=TEST,
        status=TEST,
        subject="relay",
        summary="a test alert from `relay doctor --send-test-alert`: alerts reach this sink",
        at=now,
        since=now,
        console_url=console_url(config, "/console/"),
    )
    checks = []
    for sink, name in ALERT_SINK_CHECKS.items():
        if sink not in config.alert_sinks:
            checks.append(Check(name, NOT_CONFIGURED, f"{_SINK_SETTINGS[sink]} is not set"))
            continue
        try:
            answer = send(config, alert, sink)
        except SinkError as exc:
            checks.append(failed(name, f"the test alert was not taken: {exc}", _SINK_FIXES[sink]))
            continue
        record_sent(runtime, alert, sink, answer)
        if sink == SENTRY:
            import sentry_sdk

            sentry_sdk.flush(timeout=VENDOR_TIMEOUT_S)
            checks.append(passed(name, f"a test message went to Sentry ({alert.id}): look for it among the issues"))
        else:
            checks.append(passed(name, f"a test alert was taken ({answer}, {alert.id})"))
    return checks
