"""Test services: a real database (SQLite and PostgreSQL), real Redis, the sandbox over HTTP.

PostgreSQL and Redis are found through TEST_DATABASE_URL / TEST_REDIS_URL or on 127.0.0.1.
Locally a missing service skips its tests; under CI=true it fails them.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import sqlalchemy as sa

from sandbox import SandboxSettings, serve_in_thread
from web import create_app
from web.db import Database
from web.models import Delivery, Event

FIXTURES = Path(__file__).resolve().parent.parent / "sandbox" / "fixtures" / "sparkloop"
TOKEN = "test-token"
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


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


@pytest.fixture(scope="session")
def sandbox():
    running = serve_in_thread("127.0.0.1", 0, settings=SandboxSettings())
    yield running
    running.stop()


@pytest.fixture(scope="session")
def redis_url():
    require_service("Redis", REDIS_URL)
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url():
    require_service("PostgreSQL", PG_URL)
    db = Database(PG_URL)
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    db.upgrade()
    db.dispose()
    return PG_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'relay.sqlite3'}"
    url = request.getfixturevalue("postgres_url")
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE events, deliveries, subscriber_links RESTART IDENTITY CASCADE"))
    db.dispose()
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


def make_app(env: dict[str, str]):
    app = create_app(env)
    app.config["TESTING"] = True
    db = app.extensions["relay.db"]
    if db.url.startswith("sqlite"):
        db.upgrade()
    return app


@pytest.fixture
def app(environ):
    app = make_app(environ)
    yield app
    app.extensions["relay.db"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def post_event(client, payload, token=TOKEN, **kwargs):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["SparkLoop-Token"] = token
    return client.post("/webhooks/sparkloop", data=body, headers=headers, **kwargs)


def events(app) -> list[Event]:
    db = app.extensions["relay.db"]
    with db.session() as session:
        return list(session.scalars(sa.select(Event).order_by(Event.id)))


def deliveries(app) -> list[Delivery]:
    db = app.extensions["relay.db"]
    with db.session() as session:
        return list(session.scalars(sa.select(Delivery).order_by(Delivery.id)))
