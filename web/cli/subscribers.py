"""`relay subscribers …`: requests about one subscriber's data. `forget` is an erasure request
(workers.erasure says what goes and what stays); `unlink` drops what the destinations remember
of them, vendor ids and versions (workers.identity), so that the next delivery finds or creates them again.
Both name the person by a keyed digest only.

Without --yes it asks for confirmation on a terminal, and refuses (exit 2, nothing changed)
when there is none to ask on: a script must say --yes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import click
import redis
from flask import current_app
from flask.cli import with_appcontext

from operations import subscribers as requests
from relay.destinations import Destination
from relay.runtime import Runtime
from web.cli.audit import cli_actor
from web.cli.support import known_destinations, store_errors
from workers import erasure
from workers.outcomes import Deferred
from workers.vendor_errors import VendorError

log = logging.getLogger("relay.erasure")
links_log = logging.getLogger("relay.identity")


@click.group("subscribers")
def subscribers_group():
    """Requests about one subscriber's data (erasure, stored links)."""


def _person(ctx, param, value) -> erasure.Person:
    try:
        return erasure.Person.given(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _installed(fits: Callable[[Destination], object]) -> list[str]:
    """The installed destinations (and RELAY_PLUGINS') that `fits`, for a help text; what the
    command accepts is the app's registry's (see _purged, _unlinked)."""
    return [name for name, destination in known_destinations().items() if fits(destination)]


@subscribers_group.command("forget")
@click.argument("subscriber", metavar="EMAIL|SUBSCRIBER_ID", callback=_person)
@click.option(
    "--purge",
    "purge",
    multiple=True,
    metavar="DESTINATION",
    help="Also ask this destination to erase them (repeatable): one that takes an erasure request"
    f" ({', '.join(_installed(lambda d: d.erasure)) or 'none installed'}). "
    + "; ".join(f"{name}: {d.erasure.then}" for name, d in known_destinations().items() if d.erasure and d.erasure.then)
    + ".",
)
@click.option("--purge-sprig", is_flag=True, hidden=True, help="Deprecated: --purge sprig.")
@click.option("--dry-run", is_flag=True, help="Say what would go; change nothing, ask no vendor.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed when not on a terminal).")
@with_appcontext
@store_errors
def subscribers_forget(subscriber: erasure.Person, purge: tuple[str, ...], purge_sprig: bool, dry_run: bool, yes: bool):
    """An erasure request: delete this person's events, deliveries and what the destinations
    remember of them from Relay's store, and anonymize them where someone else's event names
    them (as its referrer); everyone else's data stays. Running it again is harmless. What a
    vendor that takes no erasure request keeps (Spruce's contact) stays."""
    runtime = Runtime.of(current_app)
    config = runtime.config
    ref = erasure.reference(subscriber, config)
    if purge_sprig:
        click.echo("Warning: --purge-sprig is deprecated: use --purge sprig", err=True)
    vendors = _purged(runtime, [*purge, *(["sprig"] if purge_sprig else [])])
    found = requests.forget_plan(runtime, subscriber)
    if dry_run:
        _report(ref, found, vendors, runtime, done=False)
        click.echo("dry run: nothing changed")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not on a terminal: pass --yes to confirm the erasure")
        click.confirm(f"Erase {ref} ({_summary(found)})?", abort=True)
    try:
        forgotten = requests.forget(runtime, found.person, named=subscriber, actor=cli_actor(runtime), purge=vendors)
    except erasure.Busy as exc:
        click.echo(f"Error: {exc}; nothing changed, run the same command again", err=True)
        raise SystemExit(1) from None
    except (VendorError, Deferred) as exc:
        reason = str(exc) if isinstance(exc, VendorError) else f"{exc.reason} (try in {exc.wait_s:.0f} s)"
        click.echo(
            f"Error: {exc.vendor if isinstance(exc, VendorError) else 'a vendor'} did not take the erasure"
            f" request: {reason}; nothing changed in Relay's store, run the same command again (or"
            " without --purge)",
            err=True,
        )
        raise SystemExit(1) from None
    found = forgotten.done
    _report(ref, found, vendors, runtime, done=True, requested=forgotten.requests)
    log.info(
        "erasure request %s done: %s",
        ref,
        _summary(found),  # after the report, as backfill's
        extra={
            "erasure": ref,
            **found.counts(),
            **{f"{vendor}_erasure_requests": len(ids) for vendor, ids in forgotten.requests.items()},
        },
    )


def _purged(runtime: Runtime, names: list[str]) -> list[str]:
    """The destinations `--purge` names, each once, checked: one that takes an erasure request
    and is configured."""
    takers = [name for name, destination in runtime.destinations.items() if destination.erasure]
    for name in dict.fromkeys(names):
        if name not in takers:
            raise click.BadParameter(
                f"{name!r} takes no erasure request (choose from {', '.join(takers) or 'none'})",
                param_hint="'--purge'",
            )
        if name not in requests.erasing_vendors(runtime):
            group = runtime.destinations[name].settings
            secrets = ", ".join(setting.name for setting in group.settings if setting.secret)
            raise click.UsageError(f"--purge {name} needs {secrets}: {group.title} is not configured")
    return list(dict.fromkeys(names))


def _summary(found: erasure.ErasurePlan) -> str:
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in found.counts().items())


def _report(
    ref: str,
    found: erasure.ErasurePlan,
    vendors: list[str],
    runtime: Runtime,
    done: bool,
    requested: dict[str, list[str]] | None = None,
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
        f"  identity links (what the destinations remember: vendor ids, versions) {verb('deleted', 'to delete')}: "
        f"{counts['identity_links_deleted']}"
    )
    for vendor in requests.erasing_vendors(runtime):
        title = runtime.destinations[vendor].settings.title
        if vendor not in vendors:
            click.echo(f"  {title}: not asked (--purge {vendor} asks {title} to erase them)")
            continue
        asked = requests.vendor_asks(runtime, found.person, vendor)
        then = runtime.destinations[vendor].erasure.then  # type: ignore[union-attr]  # erasing_vendors: it has one
        if not any(asked.values()):
            click.echo(f"  {title}: no {' or '.join(asked)} of theirs is known: nothing to purge")
        elif done:
            request_ids = (requested or {}).get(vendor) or []
            click.echo(
                f"  {title}: purge requested ({len(request_ids)} request, {title} request id "
                f"{', '.join(request_ids) or '-'})" + (f"; {then}" if then else "")
            )
        else:
            listed = " and ".join(f"{count} {what}(s)" for what, count in asked.items())
            click.echo(f"  {title}: would ask to purge {listed}")
    for destination in runtime.config.configured().values():
        if destination.unerased and not destination.erasure:
            click.echo(f"  {destination.settings.title}: {destination.unerased}")


@subscribers_group.command("unlink")
@click.argument("subscriber", metavar="EMAIL|SUBSCRIBER_ID", callback=_person)
@click.option(
    "--destination",
    "destinations",
    multiple=True,
    metavar="DESTINATION",
    help="Only what this destination remembers (repeatable; default: all of them: "
    f"{', '.join(_installed(lambda d: d.remembers)) or 'none installed'}). What the next delivery does without it: "
    + "; ".join(f"{name} {d.unlinked}" for name, d in known_destinations().items() if d.remembers and d.unlinked)
    + ".",
)
@click.option("--dry-run", is_flag=True, help="Say what would be dropped; change nothing.")
@with_appcontext
@store_errors
def subscribers_unlink(subscriber: erasure.Person, destinations: tuple[str, ...], dry_run: bool):
    """Drop what Relay remembers of this person at the destinations: Spruce ids (say, of a
    contact staff merged into another), Sprig attribute versions, any destination's own. Their
    events stay. Relay forgets a Spruce id by itself when Spruce answers 404 for it."""
    runtime = Runtime.of(current_app)
    ref = erasure.reference(subscriber, runtime.config)
    chosen = _unlinked(runtime, list(destinations))
    found = requests.links(runtime, subscriber, chosen)
    if not found.known:
        click.echo(
            f"Error: Relay's store knows no subscriber {ref}: no event names them and no "
            "link is kept for them (check the email or id)",
            err=True,
        )
        raise SystemExit(1)
    if dry_run:
        _report_links(ref, found.held, [runtime.destinations[name] for name in chosen], done=False)
        click.echo("dry run: nothing changed")
        return
    try:
        dropped = requests.unlink(runtime, found, chosen, actor=cli_actor(runtime))
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
    _report_links(ref, dropped, [runtime.destinations[name] for name in chosen], done=True)


def _unlinked(runtime: Runtime, names: list[str]) -> list[str]:
    """The destinations `--destination` names (all that remember something when none), checked."""
    remembering = requests.remembering(runtime)
    for name in names:
        if name not in remembering:
            raise click.BadParameter(
                f"{name!r} remembers nothing of subscribers (choose from {', '.join(remembering)})",
                param_hint="'--destination'",
            )
    return [name for name in remembering if name in (names or remembering)]


def _report_links(ref: str, found: list[str], destinations: list[Destination], done: bool) -> None:
    click.echo(f"Links of {ref} ({', '.join(d.name for d in destinations)}):")
    if not found:
        click.echo("  none kept: nothing to drop")
        return
    counts = {name: found.count(name) for name in dict.fromkeys(found)}
    listed = ", ".join(name + (f" ({n} links)" if n > 1 else "") for name, n in counts.items())
    click.echo(f"  {'dropped' if done else 'would drop'}: {listed}")
    for destination in destinations:
        if destination.unlinked and set(destination.remembers.values()) & set(found):
            click.echo(f"  {destination.settings.title}'s next delivery for them: {destination.unlinked}")
