"""The suite's own use of the test services (testbed/services.py, tests/conftest.py): only the
databases and Redis dbs README.md lists, never Redis' default db 0, each taken away again by
whoever made it, and the test servers' access lines kept out of pytest's output."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

from relay.db import Database
from testbed.services import (
    DRILL_REDIS_DBS, DRILLS, MIGRATION_URL, REDIS_DBS, drop_database, empty_redis, ensure_database, existing_databases,
    require_service, suite_footprint,
)

README = Path(__file__).resolve().parent.parent / "README.md"
BENCHMARKS_REDIS_DB = 14  # bench/README.md


def test_the_suite_uses_redis_dbs_of_its_own_and_never_db_0():
    used = [*REDIS_DBS, *DRILL_REDIS_DBS]
    assert len(set(used)) == len(used), used  # no two users share one
    assert 0 not in used and BENCHMARKS_REDIS_DB not in used


def test_readme_lists_every_database_and_redis_db_the_tests_use():
    table = [line.strip("|").split(" | ") for line in README.read_text().splitlines()
             if line.startswith("| ") and line.count(" | ") == 2]
    redis_db = {database: redis for _, database, redis in table}
    for name, db in DRILLS.items():
        [row] = [database for database in redis_db if f"`test_{name}`" in database]  # TEST_DATABASE_URL `test`
        assert redis_db[row].strip() == (str(db) if db is not None else "a `redis-server` of its own, on a free port")
    processes = [redis for used_by, _, redis in table if "test process" in used_by or "second to sixth" in used_by]
    assert [int(db) for db in re.findall(r"\d+", " ".join(processes))] == list(REDIS_DBS)


def test_a_database_made_by_a_test_is_dropped_even_with_a_connection_open():
    require_service("PostgreSQL", MIGRATION_URL)  # the migration tests' database: this process's
    drop_database(MIGRATION_URL)
    assert ensure_database(MIGRATION_URL) and not ensure_database(MIGRATION_URL)  # created once
    name = MIGRATION_URL.rsplit("/", 1)[1]
    assert name in suite_footprint()[0]  # what the end-of-run check would report
    still_open = Database(MIGRATION_URL).engine.connect()  # as a killed worker's, not yet noticed
    try:
        drop_database(MIGRATION_URL)
    finally:
        try:
            still_open.close()
        except sa.exc.DBAPIError:
            pass  # the server closed it
    assert name not in existing_databases(MIGRATION_URL)
    assert name not in suite_footprint()[0]


def test_a_redis_db_a_test_filled_is_empty_afterwards(redis_url):
    db = int(redis_url.rsplit("/", 1)[1])
    client = redis.Redis.from_url(redis_url)
    client.set("relay:test:left", "1")
    assert db in suite_footprint()[1]
    empty_redis(redis_url)
    assert client.dbsize() == 0 and db not in suite_footprint()[1]
    client.close()


def test_the_test_servers_log_no_access_lines(sandbox, caplog):
    """The sandbox's answer to a slow request comes after its test: its access line went
    straight into pytest's output."""
    caplog.set_level(logging.INFO)
    assert httpx.get(f"{sandbox.url}/_sandbox/state", timeout=5).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.name == "werkzeug"] == []
