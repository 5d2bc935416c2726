"""The test services: PostgreSQL and Redis, found through TEST_DATABASE_URL / TEST_REDIS_URL or
on 127.0.0.1, with a database and a Redis db for each test process (pytest-xdist's gw0, gw1, …)
and for each drill, so that no process truncates or flushes what another one uses; and making,
emptying and dropping them. Locally a missing service skips its tests; under CI=true it fails
them. README.md's test section lists the names and dbs."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import sqlalchemy as sa

from relay.db import Database
from relay.models import Base

# gw0, gw1, … under pytest-xdist; the first process (or the only one) uses the plain names.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
# Redis dbs on the test server by process (gw6 is for a single file run beside a full suite),
# clear of the drills' and the benchmarks' 14. Never db 0: Redis' default, where whatever else
# uses the server keeps its data.
REDIS_DBS = (15, 13, 12, 10, 9, 8, 3)
# Each drill's PostgreSQL database and Redis db on the test servers (testbed/drills/): its own,
# so that no test process truncates, flushes or takes its work. None: a redis-server of the
# drill's own (the `redis_server` fixture), for the Redis drill and the hand-back drill.
DRILLS = {
    "relay_drills": 11,
    "relay_drill_workers": 7,
    "relay_drill_restart": 4,
    "relay_drill_postgres": 6,
    "relay_drill_production": 5,
    "relay_drill_storms": 1,
    "relay_drill_vendors": 2,
    "relay_drill_handback": None,
    "relay_drill_redis": None,
    "relay_drill_hold": None,
    "relay_drill_budget": None,
    "relay_drill_alerts": None,
}
DRILL_REDIS_DBS = tuple(db for db in DRILLS.values() if db is not None)


def _for_this_process(url: str, suffix: str) -> str:
    return url if WORKER == 0 else f"{url}{suffix}"


PG_FIRST_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FIRST_DATABASE = PG_FIRST_URL.rsplit("/", 1)[1]
PG_URL = _for_this_process(PG_FIRST_URL, f"_gw{WORKER}")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
if WORKER:
    REDIS_URL = f"{REDIS_URL.rsplit('/', 1)[0]}/{REDIS_DBS[WORKER]}"
# The migration tests' database, one per process as PG_URL is: test_migrations, test_gw1_migrations, …
MIGRATION_URL = f"{PG_URL}_migrations"


def reachable(url: str) -> bool:
    parts = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    try:
        with socket.create_connection((parts.hostname, parts.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    if reachable(url):
        return
    message = f"{name} is not reachable at {urlsplit(url).hostname}:{urlsplit(url).port}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: a missing service is a failure)")
    pytest.skip(message)


def empty_redis(url: str) -> None:
    """Empty the Redis db `url` names (what the tests' runtimes counted is flushed as each closes)."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(f"{url.rsplit('/', 1)[0]}/postgres", isolation_level="AUTOCOMMIT")


def existing_databases(url: str) -> set[str]:
    """The databases on the PostgreSQL server of `url`."""
    admin = _admin(url)
    with admin.connect() as conn:
        names = set(conn.scalars(sa.text("SELECT datname FROM pg_database")))
    admin.dispose()
    return names


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database `url` names, unless it exists; whether it was created."""
    name = url.rsplit("/", 1)[1]
    admin = _admin(url)
    with admin.connect() as conn:
        missing = not conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
        if missing:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return missing


def drop_database(url: str) -> None:
    """Drop the PostgreSQL database `url` names, if it exists, with any connection still open to
    it (a killed worker's, which the server has not noticed yet)."""
    admin = _admin(url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def empty_database(url: str) -> None:
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    db.dispose()


def migrated_from_scratch(url: str) -> str:
    """The PostgreSQL database `url` names, created if missing, emptied and migrated."""
    ensure_database(url)
    empty_database(url)
    db = Database(url)
    db.upgrade()
    db.dispose()
    return url


def migrated_sqlite(path: Path) -> Path:
    """A SQLite store at `path`, migrated, its write-ahead log folded back into the file (all
    of it is in the file: a copy is the same store)."""
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    assert not path.with_name(path.name + "-wal").exists(), "the store's log is still open"
    return path


def empty_postgres(url: str) -> None:
    """Every table of the models emptied and every id starting from 1 again, as TRUNCATE …
    RESTART IDENTITY would, but row by row: a TRUNCATE gives every table and index a new file,
    synced to disk at its commit, which took 0.4 to 0.5 s on a loaded 2-core machine, before each
    of the suite's PostgreSQL tests; deleting the few rows a test leaves takes milliseconds."""
    db = Database(url)
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):  # the referencing ones first
            conn.execute(table.delete())
        sequences = conn.scalars(
            sa.text("SELECT relname FROM pg_class WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace")
        ).all()
        for sequence in sequences:  # setval, not ALTER SEQUENCE … RESTART: that one makes a new file too
            conn.execute(sa.text("SELECT setval(CAST(:sequence AS regclass), 1, false)"), {"sequence": sequence})
    db.dispose()


def suite_databases() -> set[str]:
    """Every PostgreSQL database the suite may make (the processes', their migration tests',
    the drills'), named from TEST_DATABASE_URL's."""
    processes = [FIRST_DATABASE, *(f"{FIRST_DATABASE}_gw{n}" for n in range(1, len(REDIS_DBS)))]
    return {*processes, *(f"{name}_migrations" for name in processes), *map(drill_database, DRILLS)}


def drill_database(drill: str) -> str:
    """A drill's database, named after TEST_DATABASE_URL's (`test_relay_drills`), so that two
    runs of the suite with different TEST_DATABASE_URLs on one server never drop each other's."""
    return f"{FIRST_DATABASE}_{drill}"


def suite_footprint() -> tuple[set[str], set[int]]:
    """The suite's databases on the PostgreSQL server and its Redis dbs holding a key on the
    Redis server, as they are now (empty sets where a server is not reachable)."""
    databases = existing_databases(PG_URL) & suite_databases() if reachable(PG_URL) else set()
    filled = set()
    if reachable(REDIS_URL):
        client = redis.Redis.from_url(REDIS_URL)
        filled = {int(db.removeprefix("db")) for db in client.info("keyspace")} & {*REDIS_DBS, *DRILL_REDIS_DBS}
        client.close()
    return databases, filled


@contextmanager
def store_at(kind: str, folder: Path, revision: str) -> Iterator[Database]:
    """A store migrated up to `revision` only, as an older deploy left it: a SQLite file in
    `folder`, or (kind "postgresql") the migration tests' database, emptied first (any session
    still on it ended, as DROP DATABASE … WITH (FORCE) would) and kept for the next such test:
    conftest's `migration_database` drops it when the process ends. Dropping and creating it for
    every test cost 1 to 2 s each (a DROP DATABASE waits for a checkpoint)."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'old.sqlite3'}"
    else:
        require_service("PostgreSQL", MIGRATION_URL)
        ensure_database(MIGRATION_URL)
        _end_sessions_on(MIGRATION_URL)
        empty_database(MIGRATION_URL)
        url = MIGRATION_URL
    db = Database(url)
    db.upgrade(revision)
    try:
        yield db
    finally:
        db.dispose()


def _end_sessions_on(url: str) -> None:
    admin = _admin(url)
    with admin.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
            {"name": url.rsplit("/", 1)[1]},
        )
    admin.dispose()
