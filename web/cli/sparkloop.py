"""`relay sparkloop webhooks list | register | remove`: SparkLoop's webhook registrations (how:
operations.sparkloop)."""

from __future__ import annotations

import functools
import json

import click
from flask import current_app
from flask.cli import with_appcontext

from operations.sparkloop import (
    BadTarget,
    MissingApiKey,
    dashboard_hint,
    find_webhook,
    list_webhooks,
    register_target,
    register_webhook,
    relay_url_known,
    remove_webhook,
)
from relay.runtime import Runtime
from web.cli.support import console
from workers.sparkloop.retry import SparkLoopUnavailable
from workers.sparkloop.webhooks import API_EVENTS


class SparkLoopFailed(click.ClickException):
    """SparkLoop refused or failed: one line, exit code 1."""


def sparkloop_errors(command):
    """A missing key is bad input (exit 2); SparkLoop's refusal or failure one line (exit 1)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MissingApiKey as missing:
            click.echo(f"Error: {missing}", err=True)
            raise SystemExit(2) from None
        except SparkLoopUnavailable as failed:
            raise SparkLoopFailed(str(failed)) from None

    return run


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
@sparkloop_errors
def webhooks_list(as_json: bool, reveal: bool):
    """Show SparkLoop's webhooks, newest first, with the events the API reports switched on.

    Relay's own (RELAY_PUBLIC_URL/webhooks/sparkloop) is marked. The API reports only
    new_referral, reward_unlocked, new_partner_referral and reward_redeemed; the dashboard-only
    events are not listed.
    """
    runtime = Runtime.of(current_app)
    webhooks = list_webhooks(runtime, reveal)
    if as_json:
        rows = [{"uuid": w.uuid, "url": w.url, "events": w.events, "relay": w.relay} for w in webhooks]
        click.echo(json.dumps(rows, indent=2))
        return
    if not webhooks:
        hint = "" if relay_url_known(runtime) else "; set RELAY_PUBLIC_URL to register Relay's"
        click.echo(f"SparkLoop holds no webhook{hint}")
        return
    from rich.table import Column, Table

    # Folded, never cut short: the operator copies the id for `remove`, and the URL is the point.
    table = Table(
        Column("uuid", no_wrap=True, min_width=max(len(w.uuid) for w in webhooks)),
        Column("url", overflow="fold"),
        Column("events switched on", overflow="fold"),
        Column("missing events", overflow="fold"),
    )
    for webhook in webhooks:
        url = f"{webhook.url}  [green](Relay)[/]" if webhook.relay else webhook.url
        table.add_row(
            webhook.uuid, url, ", ".join(webhook.switched_on) or "-", ", ".join(webhook.missing_api_events) or "-"
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
@sparkloop_errors
def webhooks_register(url: str | None):
    """Register Relay's webhook at SparkLoop with the four events the API can switch on.

    Those are new_referral, reward_unlocked, new_partner_referral and reward_redeemed. A
    webhook already registered for the URL gets the missing ones switched on instead of a
    second registration. SparkLoop takes only https:// URLs. The other three events Relay
    handles (new_partner_pending_referral, new_offer_lead, sync_subscriber) can only be switched
    on in SparkLoop's dashboard; the command says so. Every webhook carries the account token
    shown on SparkLoop's Webhooks page: Relay needs it as SPARKLOOP_WEBHOOK_TOKEN.
    """
    runtime = Runtime.of(current_app)
    try:
        target = register_target(runtime, url)
    except BadTarget as bad:
        if bad.setting == "--url":
            raise click.BadParameter(str(bad), param_hint="--url") from None
        raise click.UsageError(str(bad)) from None
    registration = register_webhook(runtime, target)
    uuid = registration.webhook.uuid
    if registration.created:
        click.echo(f"Registered {uuid} for {target}: {', '.join(registration.switched_on) or 'no events'}")
    elif registration.switched_on:
        click.echo(f"{uuid} was registered for {target}; switched on: {', '.join(registration.switched_on)}")
    else:
        click.echo(f"{uuid} is registered for {target} with {', '.join(API_EVENTS)}; nothing changed")
    if registration.still_off:  # SparkLoop answered without switching them on
        raise SparkLoopFailed(f"SparkLoop still reports off for {uuid}: {', '.join(registration.still_off)}")
    click.echo(dashboard_hint())


@webhooks_group.command("remove")
@click.argument("webhook_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Remove without asking.")
@with_appcontext
@sparkloop_errors
def webhooks_remove(webhook_id: str, yes: bool):
    """Remove the webhook ID (webhook_…, as `list` shows it): SparkLoop stops sending to it."""
    runtime = Runtime.of(current_app)
    webhook = find_webhook(runtime, webhook_id)
    if webhook is None:
        raise click.BadParameter(
            f"SparkLoop holds no webhook {webhook_id.strip()!r} (see `relay sparkloop webhooks list`)", param_hint="ID"
        )
    if not yes:
        warning = " Relay will stop receiving SparkLoop's events." if webhook.relay else ""
        click.confirm(f"Remove {webhook.uuid} ({webhook.url})?{warning}", abort=True)
    remove_webhook(runtime, webhook.uuid)
    click.echo(f"Removed {webhook.uuid} ({webhook.url})")
