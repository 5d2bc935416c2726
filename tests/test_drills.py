"""Drills: the delivery engine run by real Celery worker processes against the sandbox.

Unlike the in-process engine tests, these start `celery -A workers worker` as separate
processes, so whatever workers must agree on really goes through PostgreSQL and Redis:
- the vendor throttle, shared by three worker processes at once;
- recovery after a worker is killed (SIGKILL) in the middle of a Spruce call.

The web side is the Flask test client in this process; the drills are about the workers.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from relay.models import Delivery, DeliveryStatus, utcnow
from tests.conftest import (
    deliveries, empty_postgres, events, fresh_services, load_fixture, migrated_from_scratch, post_event,
    require_service, run_sweep, sandbox_state, wait_for,
)
from web import create_app

REPO = Path(__file__).resolve().parent.parent
# Not the suite's `test` database and Redis 15: see `drill_services`.
DRILL_DATABASE_URL = os.environ.get("TEST_DRILL_DATABASE_URL",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/relay_drills")
DRILL_REDIS_URL = os.environ.get("TEST_DRILL_REDIS_URL", "redis://127.0.0.1:6379/11")


class Drill:
    """One drill's Relay configuration, its web app (in this process) and its worker processes."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.workers: list[subprocess.Popen] = []
        self._app = None

    def app(self, **overrides: str):
        """The web side; workers started afterwards get the same configuration."""
        self.env = {**self.env, **overrides}
        self._app = create_app(self.env)
        return self._app

    def start_worker(self, name: str) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "solo",
                 "--loglevel", "WARNING", "-n", f"{name}@%h",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=REPO, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            )
        self.workers.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen) -> None:
        # A solo-pool worker runs its task in the main process: this kills it mid-delivery.
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    def worker_logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in self.workers:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
        if self._app is not None:
            self._app.extensions["relay.db"].dispose()


@pytest.fixture(scope="module")
def drill_services():
    """A PostgreSQL database and a Redis database of the drills' own. The rest of the suite, when
    it runs at the same time (another developer, parallel CI jobs), truncates `test` and flushes
    Redis 15, and its in-process workers would take the drills' tasks from the shared queue."""
    require_service("PostgreSQL", DRILL_DATABASE_URL)
    require_service("Redis", DRILL_REDIS_URL)
    return migrated_from_scratch(DRILL_DATABASE_URL), DRILL_REDIS_URL


@pytest.fixture
def drill(drill_services, sandbox, tmp_path):
    """What the `environ` fixture sets up, on PostgreSQL only (SQLite is not shared by
    processes), plus worker processes that are always stopped."""
    postgres_url, redis_url = drill_services
    empty_postgres(postgres_url)
    log_dir = tmp_path / "workers"
    log_dir.mkdir()
    running = Drill(fresh_services(postgres_url, redis_url, sandbox, tmp_path / "instance"), log_dir)
    try:
        yield running
    finally:
        running.stop()


def reward_event(event_type: str, n: int) -> dict:
    """The fixture's reward event for subscriber number `n`: another person, so another event."""
    payload = load_fixture(event_type)
    payload["subscriber"].update(
        id=f"sub_drill{n}", email=f"drill{n}@example.com", referral_code=f"drill{n:04d}",
        referral_link=f"https://mywebsite.com?rh_ref=drill{n:04d}",
    )
    return payload


def post_all(app, payloads: list[dict]) -> None:
    client = app.test_client()
    for payload in payloads:
        assert post_event(client, payload).status_code == 200


def all_events_done(app) -> bool:
    return all(e.status == "done" for e in events(app))


def in_flight(app) -> list[int]:
    return [d.id for d in deliveries(app) if d.status == DeliveryStatus.IN_FLIGHT]


def vendor_requests(sandbox, vendor: str) -> list[dict]:
    return [r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == vendor]


def most_calls_within(times: list[float], span_s: float) -> int:
    """The most calls that any window [t, t + span_s) holds."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= span_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def let_five_minutes_pass(app, redis_url: str) -> None:
    """What the clock would do for a dead worker: its delivery lease (5 min) and its subscriber
    locks (2 min) run out."""
    with app.extensions["relay.db"].session() as session:
        session.execute(sa.update(Delivery).where(Delivery.status == DeliveryStatus.IN_FLIGHT)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match="relay:lock:*"):
        client.delete(key)
    client.close()


def test_the_shared_limiter_holds_across_worker_processes(drill, sandbox):
    limit, window_s = 30, 3
    sandbox.configure(rate_limit={"sprig": {"limit": limit, "window_s": window_s}})
    app = drill.app(SPRIG_RATE_LIMIT=f"{limit}/{window_s}s", SPRUCE_API_TOKEN="")
    # One Sprig call per reward event, three windows' worth. Queued before any worker starts,
    # so the workers reserve the slots much faster than they fall due: the pace is the limiter's.
    post_all(app, [reward_event("reward_unlocked", n) for n in range(3 * limit)])
    for n in range(3):
        drill.start_worker(f"drill{n}")

    assert wait_for(lambda: all_events_done(app), timeout=60, interval=0.5), drill.worker_logs()

    assert {d.status for d in deliveries(app)} == {"succeeded"}
    calls = vendor_requests(sandbox, "sprig")
    statuses = [c["status"] for c in calls]
    assert statuses.count(429) == 0, statuses
    assert statuses == [202] * 3 * limit
    times = sorted(c["at"] for c in calls)
    rate = (len(times) - 1) / (times[-1] - times[0])
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    # The limiter grants one slot every window_s/limit, so the achieved rate can only exceed
    # limit/window_s by the jitter of the sandbox's timestamps (a few ms over a ~9 s run): 5%
    # is generous. Below it, the run loses time to worker start-up, slots used late and the
    # margin the limiter keeps per window; 80% is well under what a shared limiter reaches
    # (~97%). Per-process limiters would triple the rate and fail both bounds.
    assert 0.8 * limit / window_s <= rate <= 1.05 * limit / window_s, (rate, gaps)
    # The vendor may count in rolling windows: none may hold more than the limit. Exactly
    # window_s, no allowance: jitter between calls exactly one window apart is what a rolling
    # window would refuse too, so the limiter must leave the margin itself.
    assert most_calls_within(times, window_s) <= limit, gaps


def test_a_worker_killed_mid_delivery_loses_and_duplicates_nothing(drill, sandbox):
    subscribers = 6
    # Slow Spruce calls, so the kill lands while one is under way.
    sandbox.configure(latency_ms={"spruce": 300})
    app = drill.app()
    post_all(app, [reward_event("reward_redeemed", n) for n in range(subscribers)])

    doomed = drill.start_worker("doomed")
    # Search, create contact, list conversations answered: the note conversation's creation
    # is under way, and will land at Spruce with no one left to read the answer.
    assert wait_for(lambda: len(vendor_requests(sandbox, "spruce")) >= 3 and in_flight(app),
                    timeout=30, interval=0.05), drill.worker_logs()
    drill.kill(doomed)
    victims = in_flight(app)
    assert victims, "the kill landed between two deliveries"

    # The dead worker's message stays unacknowledged in Redis for the broker's visibility
    # timeout (an hour): only the sweep brings the delivery back, once its lease ran out.
    let_five_minutes_pass(app, drill.env["REDIS_URL"])
    assert run_sweep(app)["released"] == len(victims)
    drill.start_worker("successor")

    def swept_and_done() -> bool:
        run_sweep(app)  # beat is not running: the test is the sweep's clock
        return all_events_done(app)

    assert wait_for(swept_and_done, timeout=45, interval=1.0), drill.worker_logs()
    assert {d.status for d in deliveries(app)} == {"succeeded"}
    spruce = sandbox_state(sandbox)["spruce"]
    emails = sorted(c["emailAddresses"][0]["value"] for c in spruce["contacts"])
    assert emails == sorted(f"drill{n}@example.com" for n in range(subscribers))
    assert len(spruce["conversations"]) == subscribers
    associated = sorted(c for conv in spruce["conversations"] for c in conv["associatedContactIds"])
    assert associated == sorted(c["id"] for c in spruce["contacts"])
    notes = {conv["id"]: [i for i in spruce["items"].get(conv["id"], []) if i["isInternalNote"]]
             for conv in spruce["conversations"]}
    assert all(len(items) == 1 for items in notes.values()), notes
