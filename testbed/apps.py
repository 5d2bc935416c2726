"""A Relay on the test services, and what a test does with it in its own process: post a
webhook, read the store, and run what a worker (a delivery, the dispatcher) or beat (the sweep)
would run."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import httpx
import redis
import sqlalchemy as sa

from relay.models import Delivery, Event, utcnow
from relay.runtime import Runtime
from sandbox import SandboxSettings
from web import create_app
from workers.dispatch import dispatch
from workers.engine import run_delivery
from workers.sweep import sweep

TOKEN = "test-token"
# The event statuses nothing changes any more.
TERMINAL = {"done", "failed", "invalid", "unhandled"}


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


def make_app(env: dict[str, str], migrate: bool = True):
    """The web app on `env`, its store migrated (unless told not to: an unreachable one)."""
    app = create_app(env)
    app.config["TESTING"] = True
    if migrate:
        Runtime.of(app).db.upgrade()
    return app


def post_event(client, payload, token=TOKEN, **kwargs):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["SparkLoop-Token"] = token
    return client.post("/webhooks/sparkloop", data=body, headers=headers, **kwargs)


def events(app) -> list[Event]:
    with Runtime.of(app).db.session() as session:
        return list(session.scalars(sa.select(Event).order_by(Event.id)))


def deliveries(app) -> list[Delivery]:
    with Runtime.of(app).db.session() as session:
        return list(session.scalars(sa.select(Delivery).order_by(Delivery.id)))


def delivery_to(app, destination: str) -> Delivery:
    return next(d for d in deliveries(app) if d.destination == destination)


def received_days_ago(app, event_id: int, days: float) -> None:
    with Runtime.of(app).db.session() as session:
        session.execute(
            sa.update(Event).where(Event.id == event_id).values(received_at=utcnow() - timedelta(days=days))
        )
        session.commit()


def deliver(app, delivery_id: int) -> str:
    """Run one delivery in this process, as a worker's task would."""
    with app.app_context():
        return run_delivery(delivery_id, Runtime.of(app))


def dispatch_stored(app) -> int:
    """Publish the deliveries the web stored, as a worker's dispatcher does."""
    with app.app_context():
        return dispatch(Runtime.of(app).db, app.extensions["celery"])


def run_sweep(app, now=None) -> dict[str, int]:
    """One sweep, as beat would run it."""
    with app.app_context():
        return sweep(Runtime.of(app), now=now)


def sandbox_state(sandbox) -> dict:
    return httpx.get(f"{sandbox.url}/_sandbox/state", timeout=5).json()


def make_due(app) -> None:
    with Runtime.of(app).db.session() as session:
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
