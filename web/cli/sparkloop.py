"""`relay sparkloop webhooks list | register | remove`: SparkLoop's webhook registrations through
its API v2 (https://docs.sparkloop.app/api-v2/endpoints/webhooks).

The API switches only four of the seven events Relay handles; `register` switches those on and
names the three that must be switched on in SparkLoop's dashboard. Calls share
SPARKLOOP_RATE_LIMIT with every Relay process (the shared throttle) and wait out 429s, bounded.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
from flask import current_app
from flask.cli import with_appcontext

from relay.models import Lane
from relay.runtime import Runtime
from web.cli.support import console
from workers.classify import Action, backoff, classify
from workers.outcomes import Deferred, ErrorKind
from workers.sparkloop.client import SparkLoopClient, sparkloop_client
from workers.sparkloop.webhooks import (
    API_EVENTS,
    DASHBOARD_ONLY_EVENTS,
    DASHBOARD_URL,
    WEBHOOK_PATH,
    find,
    https_problem,
    relay_webhook_url,
    same_url,
)
from workers.throttle import Pacing
from workers.vendor_errors import VendorError

T = TypeVar("T")

# Waits for the shared throttle, a 429 or an open breaker are slept through up to this long in all.
MAX_WAITING_S = 90.0
# Reads are retried after a transient failure; writes are not (a lost answer may hide a success).
MAX_READ_FAILURES = 3
BACKOFF_BASE_S = 2.0
HIDDEN = "…"


class SparkLoopUnavailable(click.ClickException):
    """SparkLoop refused or failed: one line, exit code 1."""


def api_client() -> SparkLoopClient:
    """The process's SparkLoop client; no key is bad input (exit 2), before any call."""
    config = current_app.config["RELAY"]
    if not config.sparkloop_api_key:
        click.echo(
            "Error: SPARKLOOP_API_KEY is not set: copy the API key from SparkLoop's Settings → Integrations page",
            err=True,
        )
        raise SystemExit(2)
    return sparkloop_client(Runtime.of(current_app))


def patiently(
    client: SparkLoopClient,
    call: Callable[[SparkLoopClient], T],
    *,
    retry_failures: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call(client)` through the shared throttle, waiting (bounded) where the classifier says
    "deferred"; retrying transient failures only when `retry_failures` (reads)."""
    pacing, waited_s, failures = Pacing(lane=Lane.LIVE), 0.0, 0
    while True:
        try:
            return call(client.for_run(pacing))
        except (VendorError, Deferred) as exc:
            verdict = classify(exc)
            if verdict.kind == ErrorKind.AUTH:
                raise SparkLoopUnavailable(
                    f"SparkLoop refused SPARKLOOP_API_KEY ({verdict.reason}): "
                    "copy the key from SparkLoop's Settings → Integrations page"
                ) from None
            if verdict.action == Action.FAIL:
                raise SparkLoopUnavailable(verdict.reason) from None
            if verdict.action == Action.DEFER:
                if waited_s + verdict.wait_s > MAX_WAITING_S:
                    raise SparkLoopUnavailable(
                        f"SparkLoop calls are on hold ({verdict.reason}); try again in {math.ceil(verdict.wait_s)} s"
                    ) from None
                pacing = Pacing(lane=Lane.LIVE, reserved=verdict.slot)
                sleep(verdict.wait_s)
                waited_s += verdict.wait_s
                continue
            failures += 1
            if not retry_failures:
                raise SparkLoopUnavailable(
                    f"{verdict.reason}; SparkLoop may have acted on it all the same: "
                    "`relay sparkloop webhooks list` shows what it holds"
                ) from None
            if failures >= MAX_READ_FAILURES:
                raise SparkLoopUnavailable(verdict.reason) from None
            pacing = Pacing(lane=Lane.LIVE)
            sleep(backoff(failures, BACKOFF_BASE_S))


def shown_url(url: str, relay_url: str | None, reveal: bool) -> str:
    """Another integration's webhook URL can carry its secret in the path or query: only the
    scheme and host show, unless it is Relay's own or --reveal."""
    if reveal or (relay_url and same_url(url, relay_url)):
        return url
    parts = urlsplit(url)
    if not parts.hostname:
        return HIDDEN
    return f"{parts.scheme}://{parts.hostname}/{HIDDEN}" if (parts.path.strip("/") or parts.query) else url


def dashboard_hint() -> str:
    return (
        f"Switch on in SparkLoop's dashboard ({DASHBOARD_URL}, the webhook's events), which the API "
        f"cannot: {', '.join(DASHBOARD_ONLY_EVENTS)}"
    )


@click.group("sparkloop")
def sparkloop_group():
    """SparkLoop's side of Relay, through its API v2 (needs SPARKLOOP_API_KEY)."""


@sparkloop_group.group("webhooks")
def webhooks_group():
    """List, register and remove the webhooks SparkLoop sends events to."""


@webhooks_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@click.option("--reveal", is_flag=True, help="Show other integrations' webhook URLs whole (they may carry a secret).")
@with_appcontext
def webhooks_list(as_json: bool, reveal: bool):
    """Show SparkLoop's webhooks, newest first, with the events the API reports switched on.

    Relay's own (RELAY_PUBLIC_URL/webhooks/sparkloop) is marked. The API reports only
    new_referral, reward_unlocked, new_partner_referral and reward_redeemed; the dashboard-only
    events are not listed.
    """
    client = api_client()
    public_url = current_app.config["RELAY"].public_url
    relay_url = relay_webhook_url(public_url) if public_url else None
    webhooks = patiently(client, lambda c: c.list_webhooks(), retry_failures=True)
    rows = [
        {
            "uuid": w.uuid,
            "url": shown_url(w.url, relay_url, reveal),
            "events": w.events,
            "relay": bool(relay_url and same_url(w.url, relay_url)),
        }
        for w in webhooks
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("SparkLoop holds no webhook" + ("" if relay_url else "; set RELAY_PUBLIC_URL to register Relay's"))
        return
    from rich.table import Column, Table

    # Folded, never cut short: the operator copies the id for `remove`, and the URL is the point.
    table = Table(
        Column("uuid", no_wrap=True, min_width=max(len(w.uuid) for w in webhooks)),
        Column("url", overflow="fold"),
        Column("events switched on", overflow="fold"),
        Column("missing events", overflow="fold"),
    )
    for webhook, row in zip(webhooks, rows, strict=True):
        url = f"{row['url']}  [green](Relay)[/]" if row["relay"] else row["url"]
        table.add_row(
            row["uuid"], url, ", ".join(webhook.switched_on) or "-", ", ".join(webhook.missing_api_events) or "-"
        )
    console().print(table)


@webhooks_group.command("register")
@click.option(
    "--url",
    metavar="URL",
    help="Relay's public base URL (https://), to which /webhooks/sparkloop is appended, or that "
    "whole webhook URL; default RELAY_PUBLIC_URL.",
)
@with_appcontext
def webhooks_register(url: str | None):
    """Register Relay's webhook at SparkLoop with the four events the API can switch on.

    Those are new_referral, reward_unlocked, new_partner_referral and reward_redeemed. A
    webhook already registered for the URL gets the missing ones switched on instead of a
    second registration. SparkLoop takes only https:// URLs. The other three events Relay
    handles (new_partner_pending_referral, new_offer_lead, sync_subscriber) can only be switched
    on in SparkLoop's dashboard; the command says so. Every webhook carries the account token
    shown on SparkLoop's Webhooks page: Relay needs it as SPARKLOOP_WEBHOOK_TOKEN.
    """
    target = _register_target(url)
    client = api_client()
    existing = find(patiently(client, lambda c: c.list_webhooks(), retry_failures=True), target)
    if existing is None:
        created = patiently(client, lambda c: c.create_webhook(target, API_EVENTS), retry_failures=False)
        click.echo(f"Registered {created.uuid} for {target}: {', '.join(created.switched_on) or 'no events'}")
        webhook = created
    elif existing.missing_api_events:
        missing = existing.missing_api_events
        webhook = patiently(client, lambda c: c.switch_on(existing.uuid, missing), retry_failures=False)
        click.echo(f"{webhook.uuid} was registered for {target}; switched on: {', '.join(missing)}")
    else:
        webhook = existing
        click.echo(f"{webhook.uuid} is registered for {target} with {', '.join(API_EVENTS)}; nothing changed")
    if webhook.missing_api_events:  # SparkLoop answered without switching them on
        raise SparkLoopUnavailable(
            f"SparkLoop still reports off for {webhook.uuid}: {', '.join(webhook.missing_api_events)}"
        )
    click.echo(dashboard_hint())


def _register_target(url: str | None) -> str:
    """The webhook URL to register; bad input exits 2 before any call."""
    if url is not None:
        return _given_target(url.strip())
    public_url = current_app.config["RELAY"].public_url
    if not public_url:
        raise click.UsageError("RELAY_PUBLIC_URL is not set: set it to this Relay's public base URL, or pass --url")
    if https_problem(public_url):
        raise click.UsageError(
            f"RELAY_PUBLIC_URL is not https:// ({https_problem(public_url)}): "
            "set the https URL SparkLoop reaches, or pass --url"
        )
    return relay_webhook_url(public_url)


def _given_target(url: str) -> str:
    """--url: a base URL, as RELAY_PUBLIC_URL (Relay's webhook path is appended), or the webhook
    URL itself. Any other path would register a URL Relay does not answer."""
    problem = https_problem(url)
    if problem:
        raise click.BadParameter(problem, param_hint="--url")
    parts = urlsplit(url)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise click.BadParameter(
            "give the URL without credentials, query string or fragment: SparkLoop sends its token in a header",
            param_hint="--url",
        )
    path = parts.path.rstrip("/")
    base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    if path == "":
        return relay_webhook_url(base)
    if path == WEBHOOK_PATH:
        return base + WEBHOOK_PATH
    raise click.BadParameter(
        f"its path {parts.path} is not Relay's webhook path {WEBHOOK_PATH}: give the base URL "
        f"({base}, as RELAY_PUBLIC_URL) or {relay_webhook_url(base)}",
        param_hint="--url",
    )


@webhooks_group.command("remove")
@click.argument("webhook_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Remove without asking.")
@with_appcontext
def webhooks_remove(webhook_id: str, yes: bool):
    """Remove the webhook ID (webhook_…, as `list` shows it): SparkLoop stops sending to it."""
    client = api_client()
    webhooks = patiently(client, lambda c: c.list_webhooks(), retry_failures=True)
    webhook = next((w for w in webhooks if w.uuid == webhook_id.strip()), None)
    if webhook is None:
        raise click.BadParameter(
            f"SparkLoop holds no webhook {webhook_id.strip()!r} (see `relay sparkloop webhooks list`)", param_hint="ID"
        )
    public_url = current_app.config["RELAY"].public_url
    relay_url = relay_webhook_url(public_url) if public_url else None
    shown = shown_url(webhook.url, relay_url, reveal=False)
    if not yes:
        stops_relay = relay_url and same_url(webhook.url, relay_url)
        warning = " Relay will stop receiving SparkLoop's events." if stops_relay else ""
        click.confirm(f"Remove {webhook.uuid} ({shown})?{warning}", abort=True)
    if not patiently(client, lambda c: c.delete_webhook(webhook.uuid), retry_failures=False):
        raise SparkLoopUnavailable(f"{webhook.uuid} was gone by the time it was removed")
    click.echo(f"Removed {webhook.uuid} ({shown})")
