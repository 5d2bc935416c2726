"""Test services and the helpers every test module shares.

Services: a real database (SQLite and PostgreSQL), real Redis, the sandbox over HTTP.
PostgreSQL and Redis are found through TEST_DATABASE_URL / TEST_REDIS_URL or on 127.0.0.1.
Locally a missing service skips its tests; under CI=true it fails them. The suite runs in
parallel processes (pytest-xdist, a test file per process); each has a database, a Redis db
and a sandbox of its own, so no process truncates or flushes what another one uses.

What the suite makes on the services it takes away again: each process drops its PostgreSQL
databases and empties its Redis db when it ends, each drill its own when it ends, and the run
fails if any of them is still there afterwards (`pytest_sessionfinish`). The names and dbs are
the ones below, and README.md's test section lists them.

Apps: `relay_app(**overrides)` builds the web app on the test services (the `app` fixture is
the default one); `bare_app` is for tests that reach neither a vendor nor a worker (no Redis, no
sandbox, one SQLite file).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import sentry_sdk
import sqlalchemy as sa
from celery.contrib.testing.worker import start_worker
from sentry_sdk.transport import Transport
from werkzeug.serving import make_server

from relay.db import Database
from relay.models import Delivery, Event, utcnow
from relay.observability import init_sentry
from relay.runtime import Runtime
from sandbox import FIXTURES, SandboxSettings, serve_in_thread
from schemas.events import EVENTS
from web import create_app
from workers.dispatch import dispatch
from workers.engine import run_delivery
from workers.sweep import sweep

# An example of every event type, one file each (reward_unlocked has two shapes; the folder's
# README says which SparkLoop documents and which are built from its documented fields), and
# the types SparkLoop publishes no complete example of: their schemas require only `type`.
FIXTURE_NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))
WITHOUT_EXAMPLE = sorted(name for name, spec in EVENTS.items()
                         if [key for key, field in spec.schema.fields.items() if field.required] == ["type"])
TOKEN = "test-token"
# gw0, gw1, … under pytest-xdist; the first process (or the only one) uses the plain names.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
# Redis dbs on the test server by process (gw6 is for a single file run beside a full suite),
# clear of the drills' and the benchmarks' 14. Never db 0: Redis' default, where whatever else
# uses the server keeps its data.
REDIS_DBS = (15, 13, 12, 10, 9, 8, 3)
# Each drill's PostgreSQL database and Redis db on the test servers (tests/drills.py): its own,
# so that no test process truncates, flushes or takes its work. None: a redis-server of the
# drill's own (the `redis_server` fixture), for the Redis drill and the hand-back drill.
DRILLS = {"relay_drills": 11, "relay_drill_workers": 7, "relay_drill_restart": 4, "relay_drill_postgres": 6,
          "relay_drill_production": 5, "relay_drill_storms": 1, "relay_drill_vendors": 2,
          "relay_drill_handback": None, "relay_drill_redis": None}
DRILL_DATABASES = tuple(DRILLS)
DRILL_REDIS_DBS = tuple(db for db in DRILLS.values() if db is not None)


def _for_this_process(url: str, suffix: str) -> str:
    return url if WORKER == 0 else f"{url}{suffix}"


PG_FIRST_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_URL = _for_this_process(PG_FIRST_URL, f"_gw{WORKER}")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
if WORKER:
    REDIS_URL = f"{REDIS_URL.rsplit('/', 1)[0]}/{REDIS_DBS[WORKER]}"
# The migration tests' database, one per process as PG_URL is: test_migrations, test_gw1_migrations, …
MIGRATION_URL = f"{PG_URL}_migrations"

# The test servers' access lines (the sandbox's, `server`'s): one per request, and a slow
# request the sandbox is still answering when its test is over prints its line into pytest's
# output. Their warnings and errors still show.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _reachable(url: str) -> bool:
    parts = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    try:
        with socket.create_connection((parts.hostname, parts.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    if _reachable(url):
        return
    message = f"{name} is not reachable at {urlsplit(url).hostname}:{urlsplit(url).port}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: a missing service is a failure)")
    pytest.skip(message)


def leaked(value: str, text: str) -> bool:
    """Whether `value` appears in `text`. A number (a ZIP code) counts only on its own: inside a
    longer run of digits it is a timestamp's microseconds or an id, not the address. So does a
    code of three letters or fewer (a state, a country): `IL` inside UNAVAILABLE is no address."""
    if value.isdigit():
        return re.search(rf"(?<!\d){value}(?!\d)", text) is not None
    if len(value) <= 3 and value.isalpha():
        return re.search(rf"(?<![^\W\d_]){re.escape(value)}(?![^\W\d_])", text) is not None
    return value in text


def sentry_off() -> None:
    """No Sentry client, as before any init: sentry_sdk.init() without a DSN leaves an active one."""
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


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
def redis_server(tmp_path):
    """A redis-server of the test's own on a free loopback port (tests.drills.RedisServer),
    keeping nothing on disk and stopped after the test."""
    from tests.drills import RedisServer

    if shutil.which("redis-server") is None:
        message = "redis-server is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: a missing service is a failure)")
        pytest.skip(message)
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


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


def empty_postgres(url: str) -> None:
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE events, deliveries, subscriber_links RESTART IDENTITY CASCADE"))
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'relay.sqlite3'}"
    url = request.getfixturevalue("postgres_url")
    empty_postgres(url)
    return url


@pytest.fixture
def environ(database_url, redis_url, sandbox, tmp_path):
    return fresh_services(database_url, redis_url, sandbox, tmp_path / "instance")


def fresh_services(database_url: str, redis_url: str, sandbox, instance_path) -> dict[str, str]:
    """Empty Redis and sandbox, and the environment of a Relay that uses them."""
    flush = redis.Redis.from_url(redis_url)
    flush.flushdb()
    flush.close()
    sandbox.reset()
    # A vendor limit far above what tests send; the throttle tests lower it themselves.
    sandbox.configure(rate_limit={"spruce": {"limit": 100_000}, "sprig": {"limit": 100_000}})
    return {
        "SPARKLOOP_WEBHOOK_TOKEN": TOKEN,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SPRIG_API_KEY": "sandbox-sprig-key",
        "SPRIG_API_URL": sandbox.sprig_url,
        "SPRUCE_API_TOKEN": "sandbox-spruce-token",
        "SPRUCE_API_URL": sandbox.spruce_url,
        "RELAY_RETRY_BASE_S": "1",
        # Fast enough not to pace ordinary tests; the throttle tests set their own limits.
        "SPRIG_RATE_LIMIT": "1000/1s",
        "SPRUCE_RATE_LIMIT": "1000/1s",
        "SPARKLOOP_API_KEY": SandboxSettings().sparkloop_api_key,
        "SPARKLOOP_API_URL": sandbox.sparkloop_url,
        "SPARKLOOP_RATE_LIMIT": "1000/1s",
        "RELAY_INSTANCE_PATH": str(instance_path),
    }


@pytest.fixture
def drill_for(sandbox, tmp_path):
    """`drill_for(database, redis_url)`: a drill (tests.drills.Drill) on a PostgreSQL database
    and a Redis of its own, so that no other test process truncates, flushes or takes its work;
    its processes are always stopped."""
    from tests.drills import Drill

    made = []

    def build(database: str, redis_url: str) -> Drill:
        shared = redis_url.rsplit("/", 1)[0] == REDIS_URL.rsplit("/", 1)[0]  # else a redis_server
        assert database in DRILLS and DRILLS[database] == (int(redis_url.rsplit("/", 1)[1]) if shared else None), \
            f"{database} on {redis_url}: not as DRILLS says (and README.md's test section)"
        url = f"{PG_URL.rsplit('/', 1)[0]}/{database}"
        require_service("PostgreSQL", url)
        migrated_from_scratch(url)
        log_dir = tmp_path / "processes"
        log_dir.mkdir(exist_ok=True)
        drill = Drill(fresh_services(url, redis_url, sandbox, tmp_path / "instance"), log_dir)
        made.append((drill, url, redis_url if shared else None))
        return drill

    yield build
    for drill, url, shared_redis_url in made:
        drill.stop()
        drop_database(url)
        if shared_redis_url:
            empty_redis(shared_redis_url)


# --- what a run leaves behind ------------------------------------------------------------


def suite_databases() -> set[str]:
    """Every PostgreSQL database the suite may make (the processes', their migration tests',
    the drills'), named from TEST_DATABASE_URL's."""
    first = PG_FIRST_URL.rsplit("/", 1)[1]
    processes = [first, *(f"{first}_gw{n}" for n in range(1, len(REDIS_DBS)))]
    return {*processes, *(f"{name}_migrations" for name in processes), *DRILL_DATABASES}


def suite_footprint() -> tuple[set[str], set[int]]:
    """The suite's databases on the PostgreSQL server and its Redis dbs holding a key on the
    Redis server, as they are now (empty sets where a server is not reachable)."""
    databases = existing_databases(PG_URL) & suite_databases() if _reachable(PG_URL) else set()
    filled = set()
    if _reachable(REDIS_URL):
        client = redis.Redis.from_url(REDIS_URL)
        filled = {int(db.removeprefix("db")) for db in client.info("keyspace")} & {*REDIS_DBS, *DRILL_REDIS_DBS}
        client.close()
    return databases, filled


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
        reporter.write_line(f"the tests left behind: {', '.join(left)} (tests/conftest.py drops and empties "
                            "what they make)", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- apps ---------------------------------------------------------------------------------


def make_app(env: dict[str, str], migrate: bool = True):
    """The web app on `env`, its store migrated (unless told not to: an unreachable one)."""
    app = create_app(env)
    app.config["TESTING"] = True
    if migrate:
        app.extensions["relay.db"].upgrade()
    return app


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
def bare_app(tmp_path):
    """For what reaches neither a vendor nor a worker, built like `relay_app`: a SQLite store,
    the embedded broker, no vendor credentials; no Redis, no sandbox."""
    yield from _apps({"SPARKLOOP_WEBHOOK_TOKEN": TOKEN, "RELAY_INSTANCE_PATH": str(tmp_path / "instance")})


class SentryCapture(Transport):
    """What Sentry would be sent, as text."""

    def __init__(self):
        super().__init__()
        self.sent: list[str] = []

    def capture_envelope(self, envelope):
        self.sent.append(envelope.serialize().decode("utf-8", "replace"))


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
    with start_worker(celery_app, pool="threads", concurrency=4, perform_ping_check=False,
                      shutdown_timeout=10, loglevel="WARNING"):
        yield celery_app


@pytest.fixture
def server(app):
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(timeout=10)


# --- helpers ------------------------------------------------------------------------------


def post_event(client, payload, token=TOKEN, **kwargs):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["SparkLoop-Token"] = token
    return client.post("/webhooks/sparkloop", data=body, headers=headers, **kwargs)


def events(app) -> list[Event]:
    with app.extensions["relay.db"].session() as session:
        return list(session.scalars(sa.select(Event).order_by(Event.id)))


def deliveries(app) -> list[Delivery]:
    with app.extensions["relay.db"].session() as session:
        return list(session.scalars(sa.select(Delivery).order_by(Delivery.id)))


def delivery_to(app, destination: str) -> Delivery:
    return next(d for d in deliveries(app) if d.destination == destination)


def deliver(app, delivery_id: int) -> str:
    """Run one delivery in this process, as a worker's task would."""
    with app.app_context():
        return run_delivery(delivery_id, Runtime.of(app))


def dispatch_stored(app) -> int:
    """Publish the deliveries the web stored, as a worker's dispatcher does."""
    with app.app_context():
        return dispatch(app.extensions["relay.db"], app.extensions["celery"])


def run_sweep(app, now=None) -> dict[str, int]:
    """One sweep, as beat would run it."""
    with app.app_context():
        return sweep(Runtime.of(app), now=now)


def sandbox_state(sandbox) -> dict:
    return httpx.get(f"{sandbox.url}/_sandbox/state", timeout=5).json()


def make_due(app) -> None:
    with app.extensions["relay.db"].session() as session:
        session.execute(sa.update(Delivery).values(next_attempt_at=utcnow()))
        session.commit()


def run_pending(app, rounds: int = 10, honour_waits: bool = False) -> None:
    """Run every pending delivery; bounded. Retries are made due at once, unless
    honour_waits, where the loop sleeps until the next is due (as the sweep would)."""
    for _ in range(rounds):
        pending = [d for d in deliveries(app) if d.status == "pending"]
        if not pending:
            return
        if honour_waits:
            wait = min(d.next_attempt_at for d in pending) - utcnow()
            time.sleep(min(max(wait.total_seconds(), 0), 5))
        else:
            make_due(app)
        for delivery in pending:
            deliver(app, delivery.id)
