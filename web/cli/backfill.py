"""`relay backfill --since DATE`: recreate from SparkLoop's API what an outage kept from Relay
(how: operations.backfill)."""

from __future__ import annotations

import functools
import logging
from datetime import datetime

import click
from flask import current_app
from flask.cli import with_appcontext

from operations.backfill import PageRead, Tally, check_store, run_backfill
from operations.sparkloop import MissingApiKey, require_api_key
from operations.store import STORE_UNAVAILABLE
from relay.models import utcnow
from relay.runtime import Runtime
from relay.sealing import SealedDataError
from web.cli.support import When, counted, store_errors
from workers.sparkloop.client import MAX_PER_PAGE
from workers.sparkloop.retry import SparkLoopUnavailable

log = logging.getLogger("relay.backfill")


@click.command("backfill")
@click.option(
    "--since",
    "since",
    type=When(),
    required=True,
    metavar="WHEN",
    help="Backfill subscribers created at or after WHEN: a date (2024-05-01, UTC), a date "
    "and time (2024-05-01T08:00+02:00; UTC if no zone given) or an age (90m, 12h, 7d).",
)
@click.option("--dry-run", is_flag=True, help="Read SparkLoop and print what would be created; change nothing.")
@click.option(
    "--per-page",
    default=MAX_PER_PAGE,
    show_default=True,
    metavar="N",
    type=click.IntRange(1, MAX_PER_PAGE),
    help="Subscribers per API page (SparkLoop allows at most 200).",
)
@click.option(
    "--max-pages",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after this many pages even if older subscribers may still be in range.",
)
@with_appcontext
@store_errors
def backfill_command(since: datetime, dry_run: bool, per_page: int, max_pages: int | None):
    """Recreate the events an outage lost, from SparkLoop's subscriber list (API v2).

    SparkLoop's API has no "updated at", only created_at, so this takes the subscribers
    CREATED since --since (newest first, stopping at the first older one) and makes a
    sync_subscriber event for each, delivered like a webhook (to Sprig by default). A status
    change on an older subscriber cannot be found this way.

    A subscriber is skipped when Relay already holds an event naming their id or email
    received at or after their creation (2 minutes of clock skew allowed), such as the
    webhook that did arrive or an earlier backfill, unless the newest referral status Relay
    holds for them differs from SparkLoop's (then a status change was lost). The event's
    de-duplication key catches the rest, so running it twice creates nothing new.

    Needs SPARKLOOP_API_KEY. Calls share SPARKLOOP_RATE_LIMIT with every Relay process and
    back off on 429s. Output names subscribers by SparkLoop id only, never by email or name.
    """
    if since >= utcnow():
        raise click.BadParameter("must be in the past", param_hint="--since")
    runtime = Runtime.of(current_app)
    try:
        require_api_key(runtime)
    except MissingApiKey as missing:
        click.echo(f"Error: {missing}", err=True)
        raise SystemExit(2) from None
    check_store(runtime)  # an unreachable or unmigrated store fails before any API call

    mode = " (dry run: nothing will be changed)" if dry_run else ""
    click.echo(f"Backfilling SparkLoop subscribers created since {since:%Y-%m-%d %H:%M:%S} UTC{mode}")
    tally = Tally()
    try:
        run_backfill(
            runtime,
            since,
            per_page,
            max_pages,
            dry_run,
            tally,
            on_page=functools.partial(_print_page, dry_run),
            on_retry=_print_retry,
        )
    except (SparkLoopUnavailable, SealedDataError) as failed:
        click.echo(f"Stopped: {summary(tally, dry_run)}", err=True)
        click.echo(f"Error: {failed}", err=True)
        raise SystemExit(1) from None
    except (*STORE_UNAVAILABLE, KeyboardInterrupt):
        # What was created stays (and is skipped next time): say how far it got.
        click.echo(f"Stopped: {summary(tally, dry_run)}", err=True)
        raise
    click.echo(f"Done: {summary(tally, dry_run)}")
    if tally.page_limit_hit:
        click.echo(
            f"Stopped at --max-pages {max_pages}: older subscribers since the date may remain; "
            "run again with a higher limit (what was created is skipped next time)"
        )
    log.info("backfill %s: %s", "dry run" if dry_run else "finished", summary(tally, dry_run))


def summary(tally: Tally, dry_run: bool) -> str:
    created = f"{tally.created} would be created" if dry_run else f"{tally.created} created"
    text = (
        f"{counted(tally.pages, 'page')} read, {counted(tally.seen, 'subscriber')} seen, {created}, "
        f"{tally.already_received} skipped as already received, "
        f"{tally.duplicates} skipped as duplicates"
    )
    if tally.unusable:
        text += f", {tally.unusable} skipped as unusable (no uuid, email or created_at, or text the store cannot keep)"
    return text


def _print_page(dry_run: bool, read: PageRead) -> None:
    counts = read.counts
    click.echo(
        f"{page_label(read.page, read.total_pages)}: {read.listed} listed, {counts.seen} new since "
        f"the date: {counted(counts.created, 'event')} {'to create' if dry_run else 'created'}, "
        f"{counts.already_received} already received, {counted(counts.duplicates, 'duplicate')}"
    )
    for would in read.would_create:
        click.echo(
            f"  would create sync_subscriber for {would.uuid} "
            f"(created {would.created_at:%Y-%m-%d %H:%M} UTC, {would.referral_status})"
        )


def _print_retry(page: int, reason: str, wait_s: float) -> None:
    click.echo(f"page {page}: {reason}; retrying in {wait_s:.0f} s")


def page_label(page: int, total_pages: int | None) -> str:
    """`page 2 of 5`; `page 2` when SparkLoop did not say how many, or said fewer than were read
    (a total of 0 when the list is empty, one counted before subscribers were added)."""
    return f"page {page} of {total_pages}" if total_pages and total_pages >= page else f"page {page}"
