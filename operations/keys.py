"""Keys personal data is stored under (relay.sealing, relay.subjects): re-sealing every event
under the first of RELAY_PAYLOAD_KEYS (and re-digesting its subjects), and counting events per
key. What `relay keys` does; its module docstring says how rotation goes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from operations import audit
from operations.audit import Actor
from relay.db import Database
from relay.models import Base, Event, EventSubject, JSONType
from relay.runtime import Runtime
from relay.sealing import SealedDataError, SealedJSON
from relay.subjects import subject_rows

BATCH = 500


def as_stored(table: sa.Table) -> sa.TableClause:
    """The model's table with its sealed columns read and written as the JSON they are stored as
    (envelopes as they are, not opened), the other columns as the model declares them."""
    return sa.table(
        table.name,
        *(
            sa.column(column.name, JSONType if isinstance(column.type, SealedJSON) else column.type)
            for column in table.c
        ),
    )


events = as_stored(Base.metadata.tables[Event.__tablename__])
event_subjects = Base.metadata.tables[EventSubject.__tablename__]


class RotationStopped(Exception):
    def __init__(self, event_id: int, reason: SealedDataError):
        super().__init__(f"event {event_id}: {reason}")


@dataclass(frozen=True)
class KeyCounts:
    """Events by the key their payload is sealed under: per key of RELAY_PAYLOAD_KEYS (in its
    order, by key id), not sealed, and under key ids RELAY_PAYLOAD_KEYS does not hold."""

    by_key: list[tuple[str, int]]
    plain: int
    unknown: dict[str, int]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.by_key) + self.plain + sum(self.unknown.values())


def key_counts(runtime: Runtime) -> KeyCounts:
    db = runtime.db
    stored = sa.select(
        events.c.payload["sealed"].as_string().label("sealed"), events.c.payload["key"].as_string().label("key")
    ).subquery()
    query = sa.select(stored.c.sealed.isnot(None), stored.c.key, sa.func.count()).group_by(
        stored.c.sealed.isnot(None), stored.c.key
    )
    with db.engine.connect() as conn:
        counts: Counter = Counter()
        for is_sealed, kid, n in conn.execute(query):
            counts[(bool(is_sealed), kid if is_sealed else None)] += n
    plain = counts.pop((False, None), 0)
    by_key = [(kid, counts.pop((True, kid), 0)) for kid in db.sealer.key_ids]
    return KeyCounts(by_key, plain, {str(kid): n for (_, kid), n in counts.items()})


def stored_key_ids(engine: sa.Engine) -> set[str]:
    """The distinct key ids of the sealed payloads and errors in the store (what `relay doctor`
    checks RELAY_PAYLOAD_KEYS against)."""

    def sealed(column) -> sa.Select:
        return sa.select(column["key"].as_string()).where(column["sealed"].as_string().isnot(None))

    query = sa.union(sealed(events.c.payload), sealed(events.c.errors))
    with engine.connect() as conn:
        return {key for key in conn.scalars(query) if key}


def rotation_count(runtime: Runtime, digests: bool) -> int:
    """How many events a rotation (with `digests`: every event) visits."""
    return count(runtime.db, digests)


def rotation(
    runtime: Runtime, batch_size: int, digests: bool = False, *, actor: Actor, on_batch: Callable[[int], None]
) -> int:
    """`rotate` on the runtime's store, with its RELAY_LOOKUP_KEY for the digests: `on_batch`
    hears each committed batch's size; how many events were done. Audited as `actor`'s (how
    many events were done, also when stopped or interrupted)."""
    done = 0
    with audit.audited(runtime, actor, "keys.rotate") as entry:
        entry.details["digests"] = digests
        try:
            for batch in rotate(runtime.db, batch_size, digests, runtime.config.lookup_key):
                done += batch
                on_batch(batch)
        except RotationStopped as stopped:
            entry.failed(f"stopped at {stopped}")  # an event id and the key's id (SealedDataError): no data
            raise
        finally:
            entry.details["events"] = done
    return done


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
        return conn.scalar(sa.select(sa.func.count()).select_from(events).where(_to_do(db, digests))) or 0


def rotate(db: Database, batch_size: int, digests: bool = False, lookup_key: str | None = None) -> Iterator[int]:
    """Re-seal (and with `digests`, re-digest) the events to do, a committed batch at a time;
    yields each batch's size. Rows are locked while their batch is re-sealed (PostgreSQL), so a
    concurrent write is never overwritten with an older value."""
    sealer, last = db.sealer, 0
    while True:
        with db.engine.begin() as conn:
            rows = conn.execute(
                sa.select(events.c.id, events.c.payload, events.c.errors)
                .where(events.c.id > last, _to_do(db, digests))
                .order_by(events.c.id)
                .limit(batch_size)
                .with_for_update()
            ).all()
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
    changed = {name: new for name in ("payload", "errors") if (new := sealer.reseal(getattr(row, name))) is not None}
    if changed:
        conn.execute(sa.update(events).where(events.c.id == row.id).values(**changed))


def _redigest(conn, event_id: int, payload, lookup_key: str | None) -> None:
    conn.execute(sa.delete(event_subjects).where(event_subjects.c.event_id == event_id))
    rows = subject_rows(payload, lookup_key)
    if rows:
        conn.execute(event_subjects.insert(), [{"event_id": event_id, **row} for row in rows])
