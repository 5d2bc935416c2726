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

from collections import Counter
from collections.abc import Iterator

import click
import sqlalchemy as sa
from cryptography.fernet import Fernet
from flask import current_app
from flask.cli import with_appcontext

from relay.db import Database, get_db
from relay.models import JSONType
from relay.sealing import SealedDataError
from relay.subjects import subject_rows
from web.cli.support import console, store_errors

BATCH = 500
# The stored form of the columns: envelopes as they are, not opened (unlike the models).
events = sa.table("events", sa.column("id", sa.Integer), sa.column("payload", JSONType),
                  sa.column("errors", JSONType))
event_subjects = sa.table("event_subjects", *(sa.column(name) for name in (
    "event_id", "kind", "digest", "referral_status")))


class RotationStopped(Exception):
    def __init__(self, event_id: int, reason: SealedDataError):
        super().__init__(f"event {event_id}: {reason}")


@click.group("keys")
def keys_group():
    """Keys for personal data at rest: RELAY_PAYLOAD_KEYS and RELAY_LOOKUP_KEY."""


@keys_group.command("new")
def keys_new():
    """Print a new random key, for RELAY_PAYLOAD_KEYS (or RELAY_LOOKUP_KEY)."""
    click.echo(Fernet.generate_key().decode())


@keys_group.command("rotate")
@click.option("--batch-size", default=BATCH, show_default=True, type=click.IntRange(1, 100_000),
              metavar="N", help="Events re-sealed and committed together.")
@click.option("--digests", is_flag=True,
              help="Also recompute every event's subscriber digests (after RELAY_LOOKUP_KEY was "
                   "set or changed); visits every event.")
@with_appcontext
@store_errors
def keys_rotate(batch_size: int, digests: bool):
    """Re-seal every stored payload and error under the first of RELAY_PAYLOAD_KEYS (plain ones
    too), in batches; run it again after an interruption to continue."""
    db = get_db()
    if not db.sealer.active and not digests:
        click.echo("Error: RELAY_PAYLOAD_KEYS is not set: make a key with `relay keys new`, "
                   "set it, then run this again", err=True)
        raise SystemExit(2)
    total = count(db, digests)
    if not total:
        click.echo("nothing to do: every event is sealed under the first key")
        return
    from rich.progress import Progress

    done = 0
    try:
        with Progress(console=console(), transient=True) as progress:
            task = progress.add_task("re-sealing", total=total)
            for batch in rotate(db, batch_size, digests, current_app.config["RELAY"].lookup_key):
                done += batch
                progress.advance(task, batch)
    except KeyboardInterrupt:
        click.echo(f"interrupted after {done} of {total} events: what was done stays done; run "
                   "the same command again to continue", err=True)
        raise SystemExit(130) from None
    except RotationStopped as stopped:
        click.echo(f"Error: {stopped} ({done} of {total} events done before it)", err=True)
        raise SystemExit(1) from None
    what = "sealed under the first key" if db.sealer.active else "given fresh digests"
    click.echo(f"done: {done} events {what}")


@keys_group.command("status")
@with_appcontext
@store_errors
def keys_status():
    """Count events by the key their payload is sealed under."""
    db = get_db()
    stored = sa.select(events.c.payload["sealed"].as_string().label("sealed"),
                       events.c.payload["key"].as_string().label("key")).subquery()
    query = sa.select(stored.c.sealed.isnot(None), stored.c.key, sa.func.count()).group_by(
        stored.c.sealed.isnot(None), stored.c.key)
    with db.engine.connect() as conn:
        counts = Counter()
        for is_sealed, kid, n in conn.execute(query):
            counts[(bool(is_sealed), kid if is_sealed else None)] += n
    plain = counts.pop((False, None), 0)
    click.echo(f"{sum(counts.values()) + plain} events")
    for position, kid in enumerate(db.sealer.key_ids, start=1):
        role = ", encrypts" if position == 1 else ""
        click.echo(f"  key {position} (id {kid}{role}): {counts.pop((True, kid), 0)}")
    click.echo(f"  not encrypted: {plain}")
    if counts:
        click.echo(f"  under a key RELAY_PAYLOAD_KEYS does not hold: {sum(counts.values())} "
                   f"(key ids {', '.join(sorted(str(k) for _, k in counts))})")


# --- the work ---------------------------------------------------------------------------------


def _to_do(db: Database, digests: bool):
    """Rows that need re-sealing: their payload, or non-null errors, not under the first key."""
    if digests or not db.sealer.active:
        return sa.true()
    first = db.sealer.current_key_id

    def elsewhere(column):
        key = column["key"].as_string()
        return sa.or_(key.is_(None), key != first)

    has_errors = sa.and_(events.c.errors.isnot(None), sa.cast(events.c.errors, sa.Text) != "null")
    return sa.or_(elsewhere(events.c.payload), sa.and_(has_errors, elsewhere(events.c.errors)))


def count(db: Database, digests: bool) -> int:
    with db.engine.connect() as conn:
        return conn.scalar(sa.select(sa.func.count()).select_from(events).where(_to_do(db, digests)))


def rotate(db: Database, batch_size: int, digests: bool = False,
           lookup_key: str | None = None) -> Iterator[int]:
    """Re-seal (and with `digests`, re-digest) the events to do, a committed batch at a time;
    yields each batch's size. Rows are locked while their batch is re-sealed (PostgreSQL), so a
    concurrent write is never overwritten with an older value."""
    sealer, last = db.sealer, 0
    while True:
        with db.engine.begin() as conn:
            rows = conn.execute(
                sa.select(events.c.id, events.c.payload, events.c.errors)
                .where(events.c.id > last, _to_do(db, digests))
                .order_by(events.c.id).limit(batch_size).with_for_update()).all()
            if not rows:
                return
            for row in rows:
                try:
                    _reseal(conn, sealer, row)
                    if digests:
                        _redigest(conn, row.id, sealer.open(row.payload), lookup_key)
                except SealedDataError as exc:
                    raise RotationStopped(row.id, exc) from None
            last = rows[-1].id
        yield len(rows)


def _reseal(conn, sealer, row) -> None:
    if not sealer.active:
        return
    changed = {name: new for name in ("payload", "errors")
               if (new := sealer.reseal(getattr(row, name))) is not None}
    if changed:
        conn.execute(sa.update(events).where(events.c.id == row.id).values(**changed))


def _redigest(conn, event_id: int, payload, lookup_key: str | None) -> None:
    conn.execute(sa.delete(event_subjects).where(event_subjects.c.event_id == event_id))
    rows = subject_rows(payload, lookup_key)
    if rows:
        conn.execute(event_subjects.insert(), [{"event_id": event_id, **row} for row in rows])
