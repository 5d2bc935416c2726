"""A cold worker does not wait for a poll: on PostgreSQL the dispatcher hears each statement that
stores deliveries (NOTIFY at its commit, migration 0017) and publishes at once, with every timed
poll here set far beyond the bound; it listens again after its connection is cut; and with
nothing out it sleeps until the next stored delivery is due, not a tenth of a second. A new
pool process warms up before its first task, touching no delivery, for a bounded time."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

import workers.dispatch
import workers.tasks
from relay.models import Delivery, utcnow
from relay.runtime import Runtime
from testbed.apps import deliveries, post_event
from testbed.examples import load_fixture
from testbed.waiting import wait_for
from workers.dispatch import DispatchThread, Round, next_wait

BOUND_S = 2.0  # a notification's round; the polls below are 60 s


@pytest.fixture
def postgresql(database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has no LISTEN: its dispatcher polls")


@pytest.fixture
def published(app, monkeypatch):
    """Each publish, as (delivery id, monotonic time); the dispatcher's every timed poll 60 s."""
    sent: list[tuple[int, float]] = []
    monkeypatch.setattr(app.extensions["celery"], "send_task", lambda name, args, **_: sent.append((args[0], time.monotonic())))
    for name in ("DISPATCH_EVERY_S", "MAX_IDLE_WAIT_S", "LISTENING_IDLE_WAIT_S"):
        monkeypatch.setattr(workers.dispatch, name, 60.0)
    return sent


@pytest.fixture
def dispatcher(app, published, monkeypatch):
    rounds: list[Round] = []
    original = workers.dispatch.dispatch_round

    def counted(*args, **kwargs):
        rounds.append(original(*args, **kwargs))
        return rounds[-1]

    monkeypatch.setattr(workers.dispatch, "dispatch_round", counted)
    thread = DispatchThread(Runtime.of(app), app.extensions["celery"])
    thread.start()
    try:
        assert wait_for(lambda: len(rounds) >= 1, timeout=10), "the dispatcher's first round"
        yield rounds
    finally:
        thread.stop()


def test_a_stored_delivery_is_published_at_once_without_the_poll(postgresql, app, client, dispatcher, published):
    for n in range(3):  # each webhook on its own: every wake-up is a notification
        before = len(published)
        stored = time.monotonic()
        assert post_event(client, new_referral(n)).status_code == 200
        assert wait_for(lambda: len(published) == before + 2, timeout=BOUND_S, interval=0.01), \
            f"published {len(published) - before} of 2 within {BOUND_S} s"
        assert max(at for _, at in published[before:]) - stored < BOUND_S
    assert sorted(i for i, _ in published) == sorted(d.id for d in deliveries(app))


def test_a_burst_stored_just_after_a_round_waits_for_one_round_after_the_gathering_time(
    postgresql, app, client, published, monkeypatch
):
    monkeypatch.setattr(workers.dispatch, "GATHER_S", 1.0)
    rounds: list[tuple[float, int]] = []  # (when it ended, published)
    original = workers.dispatch.dispatch_round

    def timed(*args, **kwargs):
        done = original(*args, **kwargs)
        rounds.append((time.monotonic(), done.published))
        return done

    monkeypatch.setattr(workers.dispatch, "dispatch_round", timed)
    thread = DispatchThread(Runtime.of(app), app.extensions["celery"])
    thread.start()
    try:
        assert wait_for(lambda: rounds, timeout=10), "the dispatcher's first round"
        assert post_event(client, new_referral(0)).status_code == 200
        assert wait_for(lambda: len(published) == 2, timeout=BOUND_S, interval=0.01)
        first_round_at = next(at for at, count in rounds if count)
        for n in range(1, 4):
            assert post_event(client, new_referral(n)).status_code == 200
        assert wait_for(lambda: len(published) == 8, timeout=5, interval=0.01)
    finally:
        thread.stop()
    publishing = [(at, count) for at, count in rounds if count]
    assert [count for _, count in publishing] == [2, 6]  # the burst in one round
    assert publishing[1][0] - first_round_at >= 0.95  # after the gathering time


def test_the_dispatcher_listens_again_after_its_connection_is_cut(postgresql, app, client, dispatcher, published,
                                                                  monkeypatch):
    monkeypatch.setattr(workers.dispatch, "LISTEN_AGAIN_AFTER_S", 0.0)
    db = Runtime.of(app).db
    [first] = _listeners(db)
    with db.engine.begin() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
    # Cut, the listener is found broken (its socket turns readable) and the next round listens
    # again, on a connection of another backend.
    assert wait_for(lambda: _listeners(db) not in ([], [first]), timeout=BOUND_S, interval=0.01)
    assert post_event(client, new_referral(1)).status_code == 200
    assert wait_for(lambda: len(published) == 2, timeout=BOUND_S, interval=0.01)


def new_referral(n: int) -> dict:
    """The documented new_referral, for people of its own."""
    payload = load_fixture("new_referral")
    payload["subscriber"].update(id=f"sub_cold_{n}", email=f"cold-{n}@example.com")
    payload["referrer"].update(id=f"sub_cold_referrer_{n}", email=f"cold-referrer-{n}@example.com")
    return payload


def _listeners(db) -> list[int]:
    """The backends listening for stored deliveries in this test's database."""
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity "
            "WHERE query = 'LISTEN relay_deliveries_stored' AND datname = current_database()"
        )).scalars())


def test_a_retry_due_later_is_published_when_due_not_at_the_next_idle_poll(postgresql, app, client, monkeypatch):
    sent: list[float] = []
    monkeypatch.setattr(app.extensions["celery"], "send_task", lambda name, args, **_: sent.append(time.monotonic()))
    monkeypatch.setattr(workers.dispatch, "LISTENING_IDLE_WAIT_S", 60.0)
    post_event(client, load_fixture("new_referral"))
    db = Runtime.of(app).db
    due = utcnow() + timedelta(seconds=1.5)
    with db.session() as session:
        session.execute(sa.update(Delivery).values(next_attempt_at=due))
        session.commit()
    thread = DispatchThread(Runtime.of(app), app.extensions["celery"])
    started = time.monotonic()
    thread.start()
    try:
        assert wait_for(lambda: len(sent) == 2, timeout=5, interval=0.01)
    finally:
        thread.stop()
    assert 1.0 < max(sent) - started < 3.0  # when due (1.5 s), not at once and not after the 60 s poll


@pytest.mark.parametrize(
    "done, listening, wait",
    [
        (Round(published=3), True, workers.dispatch.DISPATCH_EVERY_S),  # work flowing
        (Round(published=0, more_due=True), True, workers.dispatch.DISPATCH_EVERY_S),  # a lane full
        (Round(published=0, any_out=True), True, workers.dispatch.MAX_IDLE_WAIT_S),  # may come back due
        (Round(published=0), True, workers.dispatch.LISTENING_IDLE_WAIT_S),  # nothing stored
        (Round(published=0, next_due_in_s=0.4), True, 0.4),  # a retry due soon
        (Round(published=0, next_due_in_s=0.0), True, workers.dispatch.DISPATCH_EVERY_S),  # another's lock
        (Round(published=0), False, workers.dispatch.MAX_IDLE_WAIT_S),  # polling: as before
    ],
)
def test_when_the_dispatcher_looks_again(done, listening, wait):
    assert next_wait(done, previous_s=workers.dispatch.MAX_IDLE_WAIT_S, listening=listening) == pytest.approx(wait)


def test_warming_a_pool_process_changes_no_delivery(app, client, sandbox):
    post_event(client, new_referral(0))
    before = [(d.status, d.attempts, d.enqueued_at, d.updated_at) for d in deliveries(app)]
    requests_before = len(sandbox.state.snapshot()["requests"])
    workers.tasks.warm_up(Runtime.of(app))
    assert [(d.status, d.attempts, d.enqueued_at, d.updated_at) for d in deliveries(app)] == before
    assert len(sandbox.state.snapshot()["requests"]) == requests_before  # no vendor hears of it


def test_a_pool_process_waits_for_its_warm_up_a_bounded_time(app, monkeypatch):
    stop = threading.Event()
    monkeypatch.setattr(workers.tasks, "warm_up", lambda runtime: stop.wait(10))
    monkeypatch.setattr(workers.tasks, "WARM_UP_WAIT_S", 0.2)
    started = time.monotonic()
    try:
        workers.tasks._warm_up()
        assert time.monotonic() - started < 2  # billiard gives a pool process 4 s to come up
    finally:
        stop.set()
