"""`relay keys …`: the keys personal data is stored under (relay.sealing, relay.subjects).

`relay keys new` prints a fresh key. `relay keys rotate` re-seals every event's payload and
errors under the first of RELAY_PAYLOAD_KEYS, sealing the plain rows stored before keys were
set, in batches committed one by one: interrupted, the same command continues where it
stopped, because rows already under the first key are recognised by their key id (a hash of
the key, never the key) in SQL and not even read. `relay keys status` counts events per key.

Rotating a key: put the new key first and keep the old one after it (every process), run
`relay keys rotate`, then drop the old key once `relay keys status` shows no event under it.

`--digests` also recomputes every event's subscriber digests (after RELAY_LOOKUP_KEY was set
or changed): it visits every event, so an interrupted run starts over.

Output shows key positions and key ids, never a key (but the new one `relay keys new` prints).
"""

from __future__ import annotations

import click
from cryptography.fernet import Fernet
from flask import current_app
from flask.cli import with_appcontext

from operations.keys import BATCH, RotationStopped, key_counts, rotation, rotation_count
from relay.runtime import Runtime
from web.cli.audit import cli_actor
from web.cli.support import console, store_errors


@click.group("keys")
def keys_group():
    """Keys for personal data at rest: RELAY_PAYLOAD_KEYS and RELAY_LOOKUP_KEY."""


@keys_group.command("new")
def keys_new():
    """Print a new random key, for RELAY_PAYLOAD_KEYS (or RELAY_LOOKUP_KEY)."""
    click.echo(Fernet.generate_key().decode())


@keys_group.command("rotate")
@click.option(
    "--batch-size",
    default=BATCH,
    show_default=True,
    type=click.IntRange(1, 100_000),
    metavar="N",
    help="Events re-sealed and committed together.",
)
@click.option(
    "--digests",
    is_flag=True,
    help="Also recompute every event's subscriber digests (after RELAY_LOOKUP_KEY was "
    "set or changed); visits every event.",
)
@with_appcontext
@store_errors
def keys_rotate(batch_size: int, digests: bool):
    """Re-seal every stored payload and error under the first of RELAY_PAYLOAD_KEYS (plain ones
    too), in batches; run it again after an interruption to continue."""
    runtime = Runtime.of(current_app)
    sealing = runtime.db.sealer.active
    if not sealing and not digests:
        click.echo(
            "Error: RELAY_PAYLOAD_KEYS is not set: make a key with `relay keys new`, set it, then run this again",
            err=True,
        )
        raise SystemExit(2)
    total = rotation_count(runtime, digests)
    if not total:
        click.echo("nothing to do: every event is sealed under the first key")
        return
    from rich.progress import Progress

    done = 0

    def advance(batch: int) -> None:
        nonlocal done
        done += batch
        progress.advance(task, batch)

    try:
        with Progress(console=console(), transient=True) as progress:
            task = progress.add_task("re-sealing", total=total)
            rotation(runtime, batch_size, digests, actor=cli_actor(runtime), on_batch=advance)
    except KeyboardInterrupt:
        click.echo(
            f"interrupted after {done} of {total} events: what was done stays done; run "
            "the same command again to continue",
            err=True,
        )
        raise SystemExit(130) from None
    except RotationStopped as stopped:
        click.echo(f"Error: {stopped} ({done} of {total} events done before it)", err=True)
        raise SystemExit(1) from None
    what = "sealed under the first key" if sealing else "given fresh digests"
    click.echo(f"done: {done} events {what}")


@keys_group.command("status")
@with_appcontext
@store_errors
def keys_status():
    """Count events by the key their payload is sealed under."""
    counts = key_counts(Runtime.of(current_app))
    click.echo(f"{counts.total} events")
    for position, (kid, n) in enumerate(counts.by_key, start=1):
        role = ", encrypts" if position == 1 else ""
        click.echo(f"  key {position} (id {kid}{role}): {n}")
    click.echo(f"  not encrypted: {counts.plain}")
    if counts.unknown:
        click.echo(
            f"  under a key RELAY_PAYLOAD_KEYS does not hold: {sum(counts.unknown.values())} "
            f"(key ids {', '.join(sorted(counts.unknown))})"
        )
