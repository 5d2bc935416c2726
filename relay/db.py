"""Engine and sessions for the store, plus schema migrations (Alembic).

A Database seals stored payloads with its RELAY_PAYLOAD_KEYS (relay.sealing: attached to its
engines, so every session and statement on them seals and opens transparently). Migration 0006
digests subscriber names with RELAY_LOOKUP_KEY (relay.subjects): the lookup key given here.
A process's Database is its runtime's (relay.runtime), which also says what a fork rebuilds.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from relay import sealing

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    def __init__(self, url: str, payload_keys: tuple[str, ...] = (), lookup_key: str | None = None):
        self.url = url
        self.payload_keys = payload_keys
        self.sealer = sealing.Sealer(payload_keys)
        self.lookup_key = lookup_key
        self.engine = make_engine(url)
        sealing.attach(self.engine, self.sealer)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @cached_property
    def intake_engine(self) -> sa.Engine:
        """The web intake's own pool: autocommit (a webhook is one statement, durable when it
        returns) and no pre-ping round trip per checkout; the intake retries once on a
        connection a PostgreSQL restart broke (web.webhooks)."""
        # An autocommit connection has nothing to roll back when it goes back to the pool.
        return self._unpinged_engine(isolation_level="AUTOCOMMIT", reset_on_return=None)

    @cached_property
    def run_engine(self) -> sa.Engine:
        """The delivery runs' own pool (workers.run_store): no pre-ping round trip per checkout;
        a run's claim that finds its connection broken (a PostgreSQL restart) claims again on a
        new one (workers.run_store.RunStore.claim). On PostgreSQL, autocommit: a run's lone
        statements need no BEGIN and COMMIT round trips, and it opens a transaction where writes
        go together (workers.run_store)."""
        if self.engine.dialect.name == "postgresql":
            return self._unpinged_engine(isolation_level="AUTOCOMMIT")
        return self._unpinged_engine()

    def _unpinged_engine(self, **options) -> sa.Engine:
        engine = make_engine(self.url, pre_ping=False, **options)
        sealing.attach(engine, self.sealer)
        return engine

    @contextmanager
    def session(self):
        with self._sessions() as session:
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def upgrade(self, revision: str = "head") -> None:
        from alembic import command  # only here: Alembic's import costs every process a second

        command.upgrade(self._alembic(), revision)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        command.downgrade(self._alembic(), revision)

    def _alembic(self):
        from alembic.config import Config as AlembicConfig

        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["engine"] = self.engine
        config.attributes["lookup_key"] = self.lookup_key
        return config

    def dispose(self) -> None:
        for engine in self._engines():
            engine.dispose()

    def forget_connections(self) -> None:
        """In a forked child: new pools, the parent's connections left alone (SQLAlchemy's recipe,
        dispose(close=False)); relay.runtime calls it after a fork."""
        for engine in self._engines():
            engine.dispose(close=False)

    def _engines(self) -> list[sa.Engine]:
        built = [name for name in ("intake_engine", "run_engine") if name in self.__dict__]
        return [self.engine, *(getattr(self, name) for name in built)]


def make_engine(
    url: str, pre_ping: bool = True, isolation_level: str | None = None, reset_on_return: str | None = "rollback"
) -> sa.Engine:
    # hide_parameters: SQL errors would otherwise quote bound values, i.e. emails and addresses.
    isolation = {"isolation_level": isolation_level} if isolation_level else {}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30}, hide_parameters=True, **isolation)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(
        url,
        pool_pre_ping=pre_ping,
        pool_reset_on_return=reset_on_return,
        pool_size=5,
        max_overflow=5,
        hide_parameters=True,
        **isolation,
        connect_args={"connect_timeout": 5},
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # The web process and the workers share one file: WAL lets readers and a writer coexist,
    # and busy_timeout makes a writer wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
