"""Retention without a scheduler of the operator's: beat sends a bounded purge once a day
(workers.retention), exactly one beat of several sends it, RELAY_RETENTION_PURGE=off turns it
off, and each run's end is recorded for `relay doctor`. Real workers, beats, PostgreSQL and
SQLite, and Redis."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from datetime import datetime, timedelta, timezone

import pytest
import redis
import sqlalchemy as sa
from celery.schedules import crontab
from redbeat.schedulers import RedBeatSchedulerEntry

import workers.retention
from relay.models import Delivery, utcnow
from relay.queue import CATCH_UP_QUEUE, RETENTION_TASK, SWEEP_TASK
from relay.runtime import Runtime
from celery.contrib.testing.worker import start_worker

from testbed.apps import events, post_event, run_pending
from testbed.examples import load_fixture
from testbed.waiting import wait_for
from testbed.apps import received_days_ago
from testbed.cli import invoke
from workers.retention import RUNNING, last_run, run_retention

PROCFILE = dict(line.split(": ", 1) for line in open("Procfile").read().splitlines() if line.strip())


def stored_ages(client, app, sandbox) -> dict[str, int]:
    """Four events: done 40 days ago, failed 40 days ago, done today, and one still pending for
    400 days (its deliveries due tomorrow). With the default ages, only the first is due to go."""
    for n, days in enumerate((40, 40, 0)):
        payload = load_fixture("reward_unlocked")
        payload["subscriber"]["id"] = f"sub_age{n}"
        assert post_event(client, payload).status_code == 200
        if n == 1:
            sandbox.configure(faults=[{"vendor": "spruce", "status": 400, "times": 1, "method": "POST",
                                       "path_prefix": "/contacts"}])
        run_pending(app)
    old_done, old_failed, recent = (e.id for e in events(app))
    for event_id in (old_done, old_failed):
        received_days_ago(app, event_id, 40)
    assert post_event(client, load_fixture("new_referral")).status_code == 200
    pending = events(app)[-1].id
    received_days_ago(app, pending, 400)
    # Not due for a day: the tests' workers must not deliver it (done, it would be due to go).
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).where(Delivery.event_id == pending)
                        .values(next_attempt_at=utcnow() + timedelta(days=1)))
        session.commit()
    statuses = {e.id: e.status for e in events(app)}
    assert [statuses[i] for i in (old_done, old_failed, recent, pending)] == ["done", "failed", "done", "received"]
    return {"old_done": old_done, "old_failed": old_failed, "recent": recent, "pending": pending}


def a_worker(app):
    """A Celery worker in this process (threads), started once the test's events are stored:
    it would deliver them itself otherwise."""
    return start_worker(app.extensions["celery"], pool="threads", concurrency=2, perform_ping_check=False,
                        shutdown_timeout=10, loglevel="WARNING")


def test_beat_schedules_a_daily_run_on_the_catch_up_queue_unless_off(relay_app):
    schedule = relay_app().extensions["celery"].conf.beat_schedule
    assert schedule["relay-retention"]["task"] == RETENTION_TASK
    assert schedule["relay-retention"]["schedule"] == crontab(hour=3, minute=0)  # every day, UTC
    assert schedule["relay-retention"]["options"] == {"queue": CATCH_UP_QUEUE}
    assert schedule["relay-sweep"]["task"] == SWEEP_TASK

    assert set(relay_app(RELAY_RETENTION_PURGE="off").extensions["celery"].conf.beat_schedule) == {"relay-sweep"}


def test_the_daily_run_purges_by_the_configured_ages_and_records_it(client, app, sandbox):
    ids = stored_ages(client, app, sandbox)

    with a_worker(app):
        # As beat sends it: by name, on the entry's queue, to a worker.
        app.extensions["celery"].send_task(RETENTION_TASK, queue=CATCH_UP_QUEUE)
        assert wait_for(lambda: ids["old_done"] not in {e.id for e in events(app)}, timeout=30)
    assert {e.id for e in events(app)} == {ids["old_failed"], ids["recent"], ids["pending"]}
    assert wait_for(lambda: last_run(Runtime.of(app).redis) is not None, timeout=10)
    run = last_run(Runtime.of(app).redis)
    assert (run["by"], run["purged"], run["complete"], run["error"]) == ("beat", 1, True, None)
    assert time.time() - run["finished_at"] < 30


def test_a_run_stops_at_its_time_budget_and_the_next_one_goes_on(client, app, sandbox, monkeypatch):
    ids = stored_ages(client, app, sandbox)
    for event_id in (ids["old_failed"], ids["recent"]):
        received_days_ago(app, event_id, 400)
    monkeypatch.setattr(workers.retention, "PURGE_BATCH", 1)
    with app.app_context():
        first = run_retention(Runtime.of(app), budget_s=0)
    assert (first.purged, first.complete) == (1, False)  # one batch, then its time was up
    assert last_run(Runtime.of(app).redis)["complete"] is False

    monkeypatch.setattr(workers.retention, "RUN_BUDGET_S", 0)
    with a_worker(app):
        app.extensions["celery"].send_task(RETENTION_TASK, queue=CATCH_UP_QUEUE)
        # Each run deletes one event and publishes the next run, until none is left.
        assert wait_for(lambda: [e.id for e in events(app)] == [ids["pending"]], timeout=30)
        # The run after the last one finds nothing left.
        assert wait_for(lambda: last_run(Runtime.of(app).redis)["complete"] is True, timeout=10)


def test_a_run_does_nothing_while_another_one_holds_the_lock(client, app, sandbox, redis_url):
    ids = stored_ages(client, app, sandbox)
    held = redis.Redis.from_url(redis_url).lock(RUNNING, timeout=60)
    assert held.acquire(blocking=False)
    try:
        with app.app_context():
            assert run_retention(Runtime.of(app)) is None
        assert ids["old_done"] in {e.id for e in events(app)}
    finally:
        held.release()
    with app.app_context():
        assert run_retention(Runtime.of(app)).purged == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_failed_run_is_recorded_by_the_class_of_its_error(relay_app):
    app = relay_app(migrate=False, DATABASE_URL="postgresql://retention:pw-in-url@127.0.0.1:9/relay")
    with app.app_context(), pytest.raises(Exception) as raised:
        run_retention(Runtime.of(app))
    run = last_run(Runtime.of(app).redis)
    assert run["error"] == type(raised.value).__name__ == "OperationalError"
    assert "pw-in-url" not in json.dumps(run)


def test_purge_retention_runs_the_same_purge_and_records_it(client, app, sandbox):
    ids = stored_ages(client, app, sandbox)

    result = invoke(app, "events", "purge", "--retention", "--yes")

    assert result.exit_code == 0 and "purged 1 finished events older than 30d" in result.output
    assert {e.id for e in events(app)} == {ids["old_failed"], ids["recent"], ids["pending"]}
    run = last_run(Runtime.of(app).redis)
    assert (run["by"], run["purged"], run["complete"]) == ("relay events purge --retention", 1, True)
    # A purge by another age is no retention run.
    invoke(app, "events", "purge", "--older-than", "1d", "--include-failed", "--yes")
    assert last_run(Runtime.of(app).redis)["purged"] == 1


# --- beat: exactly one, and off when turned off --------------------------------------------------


def sent(redis_url: str, task: str) -> int:
    """How many messages for `task` the broker holds, in every queue."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(json.loads(raw)["headers"]["task"] == task
                   for queue in ("celery", CATCH_UP_QUEUE) for raw in client.lrange(queue, 0, -1))
    finally:
        client.close()


def start_beat(environ: dict, tmp_path, name: str) -> subprocess.Popen:
    """Beat as the Procfile runs it (redbeat), in a process of its own."""
    with open(tmp_path / f"{name}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", *PROCFILE["beat"].split()], cwd=os.getcwd(),
                                env={**os.environ, **environ}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(*beats: subprocess.Popen) -> None:
    for beat in beats:
        if beat.poll() is None:
            beat.terminate()
    for beat in beats:
        try:
            beat.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(beat.pid, signal.SIGKILL)
            beat.wait(timeout=5)


def logs(tmp_path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in tmp_path.glob("*.log"))


def stored(app, entry: str) -> bool:
    try:
        RedBeatSchedulerEntry.from_key(f"redbeat:{entry}", app=app.extensions["celery"])
    except KeyError:
        return False
    return True


def make_overdue(app, entry: str) -> bool:
    """As if the beat holding the lock had last sent `entry` two days ago (it was down at 03:00
    yesterday): due at its next tick. False until a beat has stored the entry."""
    try:
        stored = RedBeatSchedulerEntry.from_key(f"redbeat:{entry}", app=app.extensions["celery"])
    except KeyError:
        return False
    stored.reschedule(last_run_at=datetime.now(timezone.utc) - timedelta(days=2))
    return True


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_of_two_beats_one_sends_the_daily_run_and_off_removes_it(app, environ, redis_url, tmp_path):
    first, second = start_beat(environ, tmp_path, "beat1"), start_beat(environ, tmp_path, "beat2")
    try:
        assert wait_for(lambda: make_overdue(app, "relay-retention"), timeout=30, interval=0.5), logs(tmp_path)
        # Beat ticks at least every 10 s (the sweep's interval).
        assert wait_for(lambda: sent(redis_url, RETENTION_TASK) >= 1 and sent(redis_url, SWEEP_TASK) >= 1,
                        timeout=40, interval=0.5), logs(tmp_path)
        assert sent(redis_url, RETENTION_TASK) == 1, logs(tmp_path)
        assert first.poll() is None and second.poll() is None  # the other one waits on redbeat's lock
    finally:
        stop(first, second)

    client = redis.Redis.from_url(redis_url)
    client.delete("celery", CATCH_UP_QUEUE, "redbeat:relay-sweep")
    client.close()
    off = start_beat({**environ, "RELAY_RETENTION_PURGE": "off"}, tmp_path, "beat-off")
    try:
        # The sweep's entry stored again: it has set its schedule up, without the run (redbeat
        # drops the entries the configuration no longer names before it stores the others).
        assert wait_for(lambda: stored(app, "relay-sweep"), timeout=70, interval=0.5), logs(tmp_path)
        assert not make_overdue(app, "relay-retention")
        assert sent(redis_url, RETENTION_TASK) == 0
    finally:
        stop(off)
