"""Accepting an event: validate, de-duplicate, store the event and its planned deliveries (the
web intake, web.webhooks, and backfill, operations.backfill).

What is written is built from the models' tables (relay.models), with SQLAlchemy Core: every
column the models declare gets its given value or the model's default, and the sealed columns
are sealed by their type. On PostgreSQL it is one statement, an INSERT ... RETURNING with
data-modifying CTEs (one round trip; in autocommit on the web's path, durable when it returns),
built once per process so that its SQL, compiled once, is the same text for every webhook and
psycopg prepares it. SQLite has no data-modifying CTEs: there the same rows go in as three
inserts in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from relay.config import Config
from relay.db import Database
from relay.models import Base, Delivery, Event, EventSubject, Lane
from relay.planning import Plan, plan_event
from relay.subjects import subject_rows
from schemas.events import raw_dedup_key

_EVENT_FIELDS = ("type", "status", "dedup_key", "payload", "errors", "source")
_SUBJECT_FIELDS = ("kind", "digest", "referral_status")


@dataclass(frozen=True)
class Ingested:
    event_id: int | None
    status: str
    errors: dict | None = None
    duplicate: bool = False


def ingest(session: Session, payload: dict, raw_body: bytes, config: Config, source: str = "webhook") -> Ingested:
    """Store an event (and its deliveries and subjects) in `session`'s transaction, committed."""
    stored = _rows(payload, raw_body, config, source)
    event_id = _store(session.connection(), stored)
    if event_id is None:
        session.rollback()
        return stored.duplicate_of(session.scalar(_stored_id(stored)))
    session.commit()
    return stored.ingested(event_id)


def ingest_webhook(db: Database, payload: dict, raw_body: bytes, config: Config) -> Ingested:
    """The web's path: on PostgreSQL the one statement in autocommit (durable when it returns);
    elsewhere `ingest`."""
    if db.engine.dialect.name != "postgresql":
        with db.session() as session:
            return ingest(session, payload, raw_body, config)
    stored = _rows(payload, raw_body, config, "webhook")
    engine = db.intake_engine
    statement = _compiled(engine.dialect)
    event_id = _execute_prepared(engine, statement.sql, statement.parameters(_one_statement_parameters(stored)))
    if event_id is None:
        with engine.connect() as connection:
            return stored.duplicate_of(connection.scalar(_stored_id(stored)))
    return stored.ingested(event_id)


def _execute_prepared(engine: sa.Engine, sql: str, parameters: MutableMapping[str, Any]) -> int | None:
    """The one statement on a pooled connection, straight through the driver, prepared: what
    SQLAlchemy's Connection adds around a statement it only passes on (an execution context, a
    result's metadata, its events) cost a webhook more than PostgreSQL's side of it did. Its
    errors are SQLAlchemy's as ever (OperationalError for a database that went away), and a
    connection a PostgreSQL restart broke is dropped from the pool and reported invalidated."""
    dialect = engine.dialect
    try:
        pooled = engine.raw_connection()
    except dialect.loaded_dbapi.Error as exc:  # the pool's own connect, which Core would wrap
        raise _as_sqlalchemy_error(dialect, sql, exc, invalidated=False) from exc
    driver = pooled.driver_connection
    assert driver is not None  # a connection checked out of the pool is open
    try:
        row = driver.execute(sql, parameters, prepare=True).fetchone()
    except dialect.loaded_dbapi.Error as exc:
        broken = dialect.is_disconnect(exc, pooled.dbapi_connection, None)
        if broken:
            pooled.invalidate(exc)
        raise _as_sqlalchemy_error(dialect, sql, exc, invalidated=broken) from exc
    finally:
        pooled.close()
    return None if row is None else row[0]


def _as_sqlalchemy_error(dialect: sa.Dialect, sql: str, error: Exception, invalidated: bool) -> sa.exc.StatementError:
    # No parameters in it: they hold the payload (make_engine's hide_parameters, the same).
    return sa.exc.DBAPIError.instance(
        sql,
        None,
        error,
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=invalidated,
        dialect=dialect,
    )


@dataclass(frozen=True)
class _Rows:
    plan: Plan
    event: dict
    lane: Lane  # of every delivery: one per planned destination
    subjects: list[dict]

    def ingested(self, event_id: int) -> Ingested:
        return Ingested(event_id=event_id, status=self.plan.status, errors=self.plan.errors)

    def duplicate_of(self, event_id: int | None) -> Ingested:
        # The unique dedup key: SparkLoop retried, or two copies raced; the first one won.
        return Ingested(event_id=event_id, status=self.plan.status, errors=self.plan.errors, duplicate=True)


def _rows(payload: dict, raw_body: bytes, config: Config, source: str) -> _Rows:
    plan = plan_event(payload, config)
    # Events that did not come from a webhook (a backfill) are catch-up work: delivered like
    # replays, with the throttle slots live traffic leaves.
    lane = Lane.LIVE if source == "webhook" else Lane.CATCH_UP
    return _Rows(
        plan,
        dict(
            type=plan.event_type or "(missing)",
            status=plan.status,
            payload=payload,
            errors=plan.errors,
            dedup_key=plan.key or raw_dedup_key(raw_body),
            source=source,
        ),
        lane,
        # Whom it names, as digests: what lookups use instead of looking into the payload.
        subject_rows(payload, config.lookup_key),
    )


def _stored_id(stored: _Rows):
    return sa.select(Event.id).where(Event.dedup_key == stored.event["dedup_key"])


def _store(connection: sa.Connection, stored: _Rows) -> int | None:
    """The event, its deliveries and its subjects; None (and nothing written) when its dedup key
    is taken. The caller commits (or is in autocommit)."""
    if connection.dialect.name == "postgresql":
        compiled = _compiled(connection.dialect)
        return connection.exec_driver_sql(compiled.sql, compiled.parameters(_one_statement_parameters(stored))).scalar()
    return _store_in_three(connection, stored)


def _store_in_three(connection: sa.Connection, stored: _Rows) -> int | None:
    events = _table(Event)
    event_id = connection.scalar(
        sqlite.insert(events)
        .values(**stored.event)
        .on_conflict_do_nothing(index_elements=[events.c.dedup_key])
        .returning(events.c.id)
    )
    if event_id is None:
        return None
    deliveries = [{"destination": d, "lane": stored.lane} for d in stored.plan.destinations]
    for model, rows in ((Delivery, deliveries), (EventSubject, stored.subjects)):
        if rows:
            connection.execute(sa.insert(_table(model)), [{"event_id": event_id, **row} for row in rows])
    return event_id


@dataclass(frozen=True)
class _DriverStatement:
    """`one_statement()` compiled once for a dialect, executed as the driver's SQL. Its SQL, its
    defaults and its types' processing (sealing included) are Core's, from the models; what is
    left out is what Core does around every execution of a statement (its cache key looked up,
    an execution context): measured, that cost a webhook more than all its parameters did."""

    compiled: SQLCompiler
    processors: tuple[tuple[str, Callable | None], ...]

    @property
    def sql(self) -> str:
        return self.compiled.string

    def parameters(self, given: dict) -> MutableMapping[str, Any]:
        values = self.compiled.construct_params(given)  # the given, and the models' defaults
        for name, process in self.processors:
            if process is not None:
                values[name] = process(values[name])
        return values


@cache
def _compiled(dialect: sa.Dialect) -> _DriverStatement:
    compiled = one_statement().compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)  # a SELECT's, so its parameters are a dict
    processors = tuple(
        (name, bind.type.dialect_impl(dialect).bind_processor(dialect)) for name, bind in compiled.binds.items()
    )
    return _DriverStatement(compiled, processors)


@cache
def one_statement() -> sa.Select:
    """PostgreSQL: the event, its deliveries and its subjects in one INSERT ... RETURNING; no
    row when the dedup key is taken (the CTEs then insert nothing). Built from the models'
    tables as they are when first used (once per process)."""
    events, deliveries, subjects = (_table(model) for model in (Event, Delivery, EventSubject))
    defaults = _Defaults()
    new_event = (
        postgresql.insert(events)
        .values(defaults.written(events, {name: _parameter(events, name) for name in _EVENT_FIELDS}))
        .on_conflict_do_nothing(index_elements=[events.c.dedup_key])
        .returning(events.c.id)
        .cte("new_event")
    )
    destinations = sa.func.unnest(_list("destinations")).table_valued("destination").render_derived("destinations")
    subject = (
        sa.func.unnest(*(_list(f"subject_{name}") for name in _SUBJECT_FIELDS))
        .table_valued(*_SUBJECT_FIELDS)
        .render_derived("subjects")
    )
    new_deliveries = _insert_per_row(
        defaults,
        deliveries,
        {"event_id": new_event.c.id, "destination": destinations.c.destination, "lane": _parameter(deliveries, "lane")},
        new_event,
        destinations,
    )
    new_subjects = _insert_per_row(
        defaults,
        subjects,
        {"event_id": new_event.c.id, **{name: subject.c[name] for name in _SUBJECT_FIELDS}},
        new_event,
        subject,
    )
    return sa.select(new_event.c.id).add_cte(new_deliveries, new_subjects)


def _one_statement_parameters(stored: _Rows) -> dict:
    return {
        **{f"events_{name}": stored.event[name] for name in _EVENT_FIELDS},
        "deliveries_lane": stored.lane.value,
        "destinations": list(stored.plan.destinations),
        **{f"subject_{name}": [row[name] for row in stored.subjects] for name in _SUBJECT_FIELDS},
    }


def _insert_per_row(defaults: _Defaults, table: sa.Table, given: dict, new_event, rows) -> sa.CTE:
    """INSERT INTO table SELECT ... FROM new_event JOIN rows: one row per element of `rows`, none
    when new_event inserted nothing."""
    written = defaults.written(table, given)
    select = sa.select(*written.values()).join_from(new_event, rows, sa.true())
    return table.insert().from_select(list(written), select, include_defaults=False).cte(f"new_{table.name}")


class _Defaults:
    """The models' defaults of the columns an insert is not given. A callable one is called once
    per statement, as Core does for an INSERT ... SELECT, and shared by every column it is the
    default of (one time in received_at, created_at, next_attempt_at ...)."""

    def __init__(self):
        self._called: dict[tuple, sa.BindParameter] = {}

    def written(self, table: sa.Table, given: dict) -> dict:
        """`given`, and every other column's default. Columns with neither are left to the
        database (their server default, or null)."""
        written = {}
        for column in table.columns:
            if column.name in given:
                written[column.name] = given[column.name]
            elif isinstance(column.default, sa.ColumnDefault):
                written[column.name] = self._default(table.name, column, column.default)
        return written

    def _default(self, table: str, column: sa.Column, default: sa.ColumnDefault):
        if default.is_clause_element:
            return default.arg
        if not default.is_callable:
            return sa.bindparam(f"{table}_{column.name}", default.arg, type_=column.type)
        function = getattr(default.arg, "__wrapped__", default.arg)  # Core's wrapper, unwrapped
        key = (function, type(column.type))
        if key not in self._called:
            name = f"default_{len(self._called)}"
            self._called[key] = sa.bindparam(name, type_=column.type, callable_=function)
        return self._called[key]


def _table(model: type[Base]) -> sa.Table:
    return Base.metadata.tables[model.__tablename__]


def _parameter(table: sa.Table, column: str) -> sa.BindParameter:
    # Named apart from the column: Core reserves a column's own name in an insert's VALUES.
    return sa.bindparam(f"{table.name}_{column}", type_=table.c[column].type)


def _list(name: str) -> sa.BindParameter:
    return sa.bindparam(name, type_=postgresql.ARRAY(sa.Text))
