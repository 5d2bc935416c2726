"""The suite's fixtures and its session hooks; the helpers they are built from are in testbed/
(what each test module imports too).

Services: a real database (SQLite and PostgreSQL), real Redis, the sandbox over HTTP
(testbed.services says where, and which database and Redis db each process and drill uses).
The suite runs in parallel processes (pytest-xdist, a test file per process); each has a
database, a Redis db and a sandbox of its own, so no process truncates or flushes what another
one uses.

What the suite makes on the services it takes away again: each process drops its PostgreSQL
databases and empties its Redis db when it ends, each drill its own when it ends, and the run
fails if any of them is still there afterwards (`pytest_sessionfinish`).

Apps: `relay_app(**overrides)` builds the web app on the test services (the `app` fixture is
the default one); `bare_app` is for tests that reach neither a vendor nor a worker (no Redis, no
sandbox, one SQLite file).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil

import pytest

# Before testbed is imported: its helpers' asserts explain themselves as a test module's do.
pytest.register_assert_rewrite("testbed")

import redis  # noqa: E402
from celery.contrib.testing.worker import start_worker  # noqa: E402

from relay.observability import init_sentry  # noqa: E402
from relay.runtime import Runtime  # noqa: E402
from sandbox import SandboxSettings, serve_in_thread  # noqa: E402
from testbed.apps import TOKEN, fresh_services, make_app  # noqa: E402
from testbed.console import CONSOLE_KEY, signed_in_client  # noqa: E402
from testbed.drills.processes import Drill, RedisServer  # noqa: E402
from testbed.exchanges import Exchange, record_exchanges  # noqa: E402
from testbed.net import served  # noqa: E402
from testbed.sentry import SentryCapture, sentry_off  # noqa: E402
from testbed.services import (  # noqa: E402
    DRILLS,
    MIGRATION_URL,
    PG_URL,
    REDIS_URL,
    WORKER,
    drill_database,
    drop_database,
    empty_database,
    empty_postgres,
    empty_redis,
    ensure_database,
    migrated_from_scratch,
    migrated_sqlite,
    reachable,
    require_service,
    suite_footprint,
)

# The test servers' access lines (the sandbox's, `server`'s): one per request, and a slow
# request the sandbox is still answering when its test is over prints its line into pytest's
# output. Their warnings and errors still show.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


# --- services -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox():
    running = serve_in_thread("127.0.0.1", 0, settings=SandboxSettings())
    yield running
    running.stop()


@pytest.fixture(scope="session")
def redis_url():
    require_service("Redis", REDIS_URL)
    yield REDIS_URL
    empty_redis(REDIS_URL)


@pytest.fixture
def r(redis_url):
    """A client of this process's Redis db, empty before and after the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of the test's own on a free loopback port (testbed.drills.RedisServer),
    keeping nothing on disk and stopped after the test."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: a missing service is a failure)")
        pytest.skip(message)
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url():
    """This process's PostgreSQL database, migrated. Afterwards it is dropped, unless it is the
    one TEST_DATABASE_URL names and was there before (CI's `test`): that one is left empty."""
    require_service("PostgreSQL", PG_URL)
    created = ensure_database(PG_URL)
    yield migrated_from_scratch(PG_URL)
    if WORKER or created:
        drop_database(PG_URL)
    else:
        empty_database(PG_URL)


@pytest.fixture(scope="session")
def migration_database():
    """The migration tests' PostgreSQL database (testbed.services.store_at: each of them empties
    it), dropped when this process ends."""
    yield MIGRATION_URL
    if reachable(MIGRATION_URL):
        drop_database(MIGRATION_URL)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A SQLite store migrated once per process: each test's store is a copy of it (migrating
    from scratch costs a tenth of a second of CPU a test; tests/test_migrations.py is what
    proves the migrations)."""
    return migrated_sqlite(tmp_path_factory.mktemp("sqlite-template") / "relay.sqlite3")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        store = tmp_path / "relay.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), store)
        return f"sqlite:///{store}"
    url = request.getfixturevalue("postgres_url")
    empty_postgres(url)
    return url


@pytest.fixture
def environ(database_url, redis_url, sandbox, tmp_path):
    return fresh_services(database_url, redis_url, sandbox, tmp_path / "instance")


@pytest.fixture
def drill_for(sandbox, tmp_path):
    """`drill_for(database, redis_url)`: a drill (testbed.drills.Drill) on a PostgreSQL database
    and a Redis of its own, so that no other test process truncates, flushes or takes its work;
    its processes are always killed afterwards."""
    made = []

    def build(database: str, redis_url: str) -> Drill:
        shared = redis_url.rsplit("/", 1)[0] == REDIS_URL.rsplit("/", 1)[0]  # else a redis_server
        assert database in DRILLS and DRILLS[database] == (int(redis_url.rsplit("/", 1)[1]) if shared else None), (
            f"{database} on {redis_url}: not as DRILLS says (and README.md's test section)"
        )
        url = f"{PG_URL.rsplit('/', 1)[0]}/{drill_database(database)}"
        require_service("PostgreSQL", url)
        migrated_from_scratch(url)
        log_dir = tmp_path / "processes"
        log_dir.mkdir(exist_ok=True)
        drill = Drill(fresh_services(url, redis_url, sandbox, tmp_path / "instance"), log_dir)
        made.append((drill, url, redis_url if shared else None))
        return drill

    yield build
    for drill, url, shared_redis_url in made:
        drill.end()  # the verdict is in: no graceful stop (test_drill_restart.py checks those)
        drop_database(url)
        if shared_redis_url:
            empty_redis(shared_redis_url)


# --- what a run leaves behind ------------------------------------------------------------


_FOOTPRINT_BEFORE = pytest.StashKey[tuple[set[str], set[int]]]()


def _runs_the_session(config) -> bool:
    return not hasattr(config, "workerinput")  # not one of pytest-xdist's worker processes


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    if _runs_the_session(session.config):
        session.config.stash[_FOOTPRINT_BEFORE] = suite_footprint()


def pytest_sessionfinish(session):
    """Fails the run if a database or Redis db of the suite's is left after it that was not
    there before it (what an earlier, interrupted run left is this run's to reuse and drop)."""
    if not _runs_the_session(session.config) or _FOOTPRINT_BEFORE not in session.config.stash:
        return
    databases_before, filled_before = session.config.stash[_FOOTPRINT_BEFORE]
    databases, filled = suite_footprint()
    left = sorted(databases - databases_before) + [f"Redis db {db}" for db in sorted(filled - filled_before)]
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(
            f"the tests left behind: {', '.join(left)} (tests/conftest.py drops and empties what they make)",
            red=True,
            bold=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- apps ---------------------------------------------------------------------------------


def _apps(base_env: dict[str, str]):
    """A builder of apps on `base_env` with some variables changed; they are disposed after."""
    made = []

    def build(migrate: bool = True, **overrides: str):
        made.append(make_app({**base_env, **overrides}, migrate))
        return made[-1]

    yield build
    for app in made:
        Runtime.of(app).close()  # its metrics flushed, its pools and Redis client closed


@pytest.fixture
def relay_app(environ):
    """Build a web app on the test services, with some variables changed."""
    yield from _apps(environ)


@pytest.fixture
def app(relay_app):
    return relay_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def console_app(relay_app):
    """The web app with the console on."""
    return relay_app(RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY)


@pytest.fixture
def operator(console_app):
    """A test client signed in to the console as an operator (operator@example.org)."""
    return signed_in_client(console_app, "operator@example.org", "operator")


@pytest.fixture
def viewer(console_app):
    """A test client signed in to the console as a viewer (viewer@example.org)."""
    return signed_in_client(console_app, "viewer@example.org", "viewer")


@pytest.fixture
def bare_app(tmp_path):
    """For what reaches neither a vendor nor a worker, built like `relay_app`: a SQLite store,
    the embedded broker, no vendor credentials; no Redis, no sandbox."""
    yield from _apps({"SPARKLOOP_WEBHOOK_TOKEN": TOKEN, "RELAY_INSTANCE_PATH": str(tmp_path / "instance")})


@pytest.fixture
def sentry(app):
    """Sentry as the app would start it with a DSN, sending into a SentryCapture."""
    capture = SentryCapture()
    init_sentry(dataclasses.replace(app.config["RELAY"], sentry_dsn="http://key@127.0.0.1:9/1"), transport=capture)
    yield capture
    sentry_off()  # no client for the other tests (sentry_sdk.init() would leave an active one)


@pytest.fixture
def worker(app):
    celery_app = app.extensions["celery"]
    with start_worker(
        celery_app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"
    ):
        yield celery_app


@pytest.fixture
def server(app):
    with served(app) as address:
        yield address


@pytest.fixture
def recorded(monkeypatch) -> list[Exchange]:
    """Every exchange over httpx's real transport in this test (testbed.vendor_contracts checks
    them against the vendors' documents)."""
    return record_exchanges(monkeypatch)


# --- browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (testbed.browser), launched once per test module;
    skipped without chromium, failed under CI=true."""
    from playwright.sync_api import sync_playwright

    from testbed.browser import launch, require_chromium

    executable = require_chromium()
    with sync_playwright() as playwright:
        running = launch(playwright, executable)
        yield running
        running.close()


@pytest.fixture
def console_server(console_app):
    """The console's app served over HTTP on loopback, for a browser: its address."""
    with served(console_app) as address:
        yield address


@pytest.fixture
def screenshots(tmp_path):
    """Screenshots into the test's folder (and RELAY_SCREENSHOTS' folder when it is set)."""
    from testbed.browser import SCREENSHOTS_VARIABLE, Screenshots

    return Screenshots(tmp_path / "screenshots", os.environ.get(SCREENSHOTS_VARIABLE))
