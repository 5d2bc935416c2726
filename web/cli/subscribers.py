"""`relay subscribers …`: requests about one subscriber's data. `forget` is an erasure request
(workers.erasure says what goes and what stays); `unlink` drops the vendor ids and versions
Relay keeps for them (workers.identity), so that the next delivery finds or creates them again.
Both name the person by a keyed digest only.

Without --yes it asks for confirmation on a terminal, and refuses (exit 2, nothing changed)
when there is none to ask on: a script must say --yes."""

from __future__ import annotations

import logging
import sys

import click
import redis
from flask import current_app
from flask.cli import with_appcontext

from operations import subscribers as requests
from relay.runtime import Runtime
from web.cli.support import store_errors
from workers import erasure, identity
from workers.outcomes import Deferred
from workers.sprig.settings import sprig_settings
from workers.vendor_errors import VendorError

log = logging.getLogger("relay.erasure")
links_log = logging.getLogger("relay.identity")

SPRUCE_STAYS = (
    "Spruce: the contact stays: it is the practice's clinical record, which Relay does not "
    "delete (ask the practice if it must go)"
)


@click.group("subscribers")
def subscribers_group():
    """Requests about one subscriber's data (erasure, stored links)."""


def _person(ctx, param, value) -> erasure.Person:
    try:
        return erasure.Person.given(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@subscribers_group.command("forget")
@click.argument("subscriber", metavar="EMAIL|SUBSCRIBER_ID", callback=_person)
@click.option(
    "--purge-sprig",
    is_flag=True,
    help="Also ask Sprig to purge the visitor (POST /v2/purge/visitors); Sprig deletes it "
    "after its delay, 10 days by default.",
)
@click.option("--dry-run", is_flag=True, help="Say what would go; change nothing, ask nothing of Sprig.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed when not on a terminal).")
@with_appcontext
@store_errors
def subscribers_forget(subscriber: erasure.Person, purge_sprig: bool, dry_run: bool, yes: bool):
    """An erasure request: delete this person's events, deliveries and identity links from
    Relay's store, and anonymize them where someone else's event names them (as its referrer);
    everyone else's data stays. Running it again is harmless. Spruce's contact stays."""
    runtime = Runtime.of(current_app)
    config = runtime.config
    ref = erasure.reference(subscriber, config)
    if purge_sprig and not sprig_settings(config).api_key:
        raise click.UsageError("--purge-sprig needs SPRIG_API_KEY: Sprig is not configured")
    found = requests.forget_plan(runtime, subscriber)
    if dry_run:
        _report(ref, found, purge_sprig, runtime, done=False)
        click.echo("dry run: nothing changed")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not on a terminal: pass --yes to confirm the erasure")
        click.confirm(f"Erase {ref} ({_summary(found)})?", abort=True)
    try:
        forgotten = requests.forget(runtime, found.person, purge=("sprig",) if purge_sprig else ())
    except erasure.Busy as exc:
        click.echo(f"Error: {exc}; nothing changed, run the same command again", err=True)
        raise SystemExit(1) from None
    except (VendorError, Deferred) as exc:
        reason = str(exc) if isinstance(exc, VendorError) else f"{exc.reason} (try in {exc.wait_s:.0f} s)"
        click.echo(
            f"Error: Sprig did not take the purge: {reason}; nothing changed in Relay's store, "
            "run the same command again (or without --purge-sprig)",
            err=True,
        )
        raise SystemExit(1) from None
    found, request_ids = forgotten.done, forgotten.requests.get("sprig")
    _report(ref, found, purge_sprig, runtime, done=True, request_ids=request_ids)
    log.info(
        "erasure request %s done: %s",
        ref,
        _summary(found),  # after the report, as backfill's
        extra={"erasure": ref, **found.counts(), "sprig_purge_requests": len(request_ids or [])},
    )


def _summary(found: erasure.ErasurePlan) -> str:
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in found.counts().items())


def _report(
    ref: str, found: erasure.ErasurePlan, purge_sprig: bool, runtime, done: bool, request_ids: list[str] | None = None
) -> None:
    verb = (lambda past, future: past) if done else (lambda past, future: future)
    counts = found.counts()
    click.echo(f"Erasure request {ref}:")
    if found.empty:
        click.echo("  Relay's store holds nothing of them")
    unsent = counts["unsent_deliveries_deleted"]
    click.echo(
        f"  their events {verb('deleted', 'to delete')}: {counts['events_deleted']}, with "
        f"{counts['deliveries_deleted']} deliveries"
        + (f" ({unsent} not sent yet: {verb('never will be', 'would never be')})" if unsent else "")
    )
    click.echo(
        f"  someone else's events naming them (e.g. as referrer) {verb('anonymized', 'to anonymize')}: "
        f"{counts['events_anonymized']}; their unfinished deliveries {verb('ended', 'to end')} unsent: "
        f"{counts['deliveries_halted']}"
    )
    click.echo(
        f"  identity links (Spruce ids, Sprig attribute versions) {verb('deleted', 'to delete')}: "
        f"{counts['identity_links_deleted']}"
    )
    if purge_sprig:
        asked = requests.vendor_asks(runtime, found.person, "sprig")
        if not any(asked.values()):
            click.echo("  Sprig: no userId or email of theirs is known: nothing to purge")
        elif done:
            click.echo(
                f"  Sprig: purge requested ({len(request_ids or [])} request, Sprig request id "
                f"{', '.join(request_ids or []) or '-'}); Sprig deletes the visitor after its delay, "
                "10 days by default"
            )
        else:
            click.echo(f"  Sprig: would ask to purge {asked['userId']} userId(s) and {asked['email']} email(s)")
    else:
        click.echo("  Sprig: not asked (--purge-sprig asks Sprig to purge the visitor)")
    click.echo(f"  {SPRUCE_STAYS}")


@subscribers_group.command("unlink")
@click.argument("subscriber", metavar="EMAIL|SUBSCRIBER_ID", callback=_person)
@click.option(
    "--destination",
    "destinations",
    multiple=True,
    type=click.Choice(sorted(identity.LINKED)),
    help="Only this destination's links (repeatable; default: all). spruce: the contact and "
    "note conversation ids (the next note looks them up first, by email and among the "
    "contact's conversations, then creates what it did not find); sprig: the attribute "
    "versions (the next delivery sends every attribute its event carries, even one a newer "
    "event set: for a Sprig user that lost its attributes).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be dropped; change nothing.")
@with_appcontext
@store_errors
def subscribers_unlink(subscriber: erasure.Person, destinations: tuple[str, ...], dry_run: bool):
    """Drop what Relay remembers of this person at the vendors: Spruce ids (say, of a contact
    staff merged into another), Sprig attribute versions. Their events stay. Relay forgets a
    Spruce id by itself when Spruce answers 404 for it."""
    runtime = Runtime.of(current_app)
    ref = erasure.reference(subscriber, runtime.config)
    chosen = [name for name in sorted(identity.LINKED) if name in (destinations or identity.LINKED)]
    found = requests.links(runtime, subscriber, chosen)
    if not found.known:
        click.echo(
            f"Error: Relay's store knows no subscriber {ref}: no event names them and no "
            "link is kept for them (check the email or id)",
            err=True,
        )
        raise SystemExit(1)
    if dry_run:
        _report_links(ref, found.held, chosen, done=False)
        click.echo("dry run: nothing changed")
        return
    try:
        dropped = requests.unlink(runtime, found, chosen)
    except erasure.Busy as exc:
        click.echo(f"Error: {exc}; nothing changed, run the same command again", err=True)
        raise SystemExit(1) from None
    except redis.RedisError as exc:
        click.echo(
            f"Error: Redis is unreachable ({type(exc).__name__}), so the person's delivery locks "
            "cannot be taken; nothing changed: check REDIS_URL",
            err=True,
        )
        raise SystemExit(1) from None
    links_log.info(
        "links of %s dropped: %s",
        ref,
        ", ".join(dropped) or "none held",
        extra={"subscriber_ref": ref, "destinations": chosen, "links_dropped": len(dropped)},
    )
    _report_links(ref, dropped, chosen, done=True)


def _report_links(ref: str, found: list[str], destinations: list[str], done: bool) -> None:
    click.echo(f"Links of {ref} ({', '.join(destinations)}):")
    if not found:
        click.echo("  none kept: nothing to drop")
        return
    counts = {name: found.count(name) for name in dict.fromkeys(found)}
    listed = ", ".join(name + (f" ({n} links)" if n > 1 else "") for name, n in counts.items())
    click.echo(f"  {'dropped' if done else 'would drop'}: {listed}")
    if any(name.startswith("Spruce") for name in found):
        click.echo(
            f"  the next Spruce delivery for them {'looks' if done else 'would look'} the "
            "contact up by email (and creates it only if none is found), then its note conversation"
        )
    if any(name.startswith("Sprig") for name in found):
        click.echo(f"  the next Sprig delivery for them {'sends' if done else 'would send'} every attribute it carries")
