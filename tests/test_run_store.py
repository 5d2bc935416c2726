"""A delivery run's store (workers.run_store): one connection per run from a pool that skips the
pre-ping, so a connection PostgreSQL dropped is found by the run's first statement, the claim,
which starts again on a new one; a run's saves wait for its next write; and two runs of one
event that end at once both count in its roll-up."""
from __future__ import annotations

import threading

import psycopg
import pytest
import sqlalchemy as sa

from relay.models import DeliveryAttempt, DestinationLink, Event, utcnow
from relay.runtime import Runtime
from testbed.apps import deliver, deliveries, post_event
from testbed.examples import load_fixture
from workers.run_store import RunStore

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def unlocked(subscriber: int) -> dict:
    payload = load_fixture("reward_unlocked")
    payload["subscriber"].update(id=f"sub_store_{subscriber}", email=f"store-{subscriber}@example.com")
    return payload


@on_postgresql
def test_a_run_whose_pooled_connection_postgresql_dropped_claims_on_a_new_one(app, client, database_url):
    post_event(client, unlocked(1))
    post_event(client, unlocked(2))
    first, second = [d.id for d in deliveries(app) if d.destination == "sprig"]
    assert deliver(app, first) == "succeeded"  # its connection went back to the runs' pool

    runs = Runtime.of(app).db.run_engine
    with runs.connect() as connection:
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    admin = runs.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:  # as a restart would: the pooled one is dead
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] is True

    assert deliver(app, second) == "succeeded"
    assert {d.id: d.status for d in deliveries(app)}[second] == "succeeded"


def test_what_a_delivery_remembers_is_saved_with_its_end(app, client):
    post_event(client, unlocked(3))
    [sprig] = [d.id for d in deliveries(app) if d.destination == "sprig"]
    assert deliver(app, sprig) == "succeeded"
    with Runtime.of(app).db.session() as session:
        [link] = session.scalars(sa.select(DestinationLink).where(DestinationLink.destination == "sprig")).all()
    assert link.subscriber_key == "id:sub_store_3" and set(link.data) == {"attribute_versions"}
    progress = next(d for d in deliveries(app) if d.id == sprig).progress
    assert progress["sprig.attributes.subscriber"] is True and progress["sprig.events.subscriber"] is True


def _attempt(claim, now) -> dict:
    return {"delivery_id": claim.delivery_id, "attempt": claim.attempt, "started_at": now, "finished_at": now,
            "outcome": "succeeded", "vendor_status": 200, "vendor_request_id": None, "duration_ms": 1, "error": None,
            "steps": None, "rate_limits": None}


@on_postgresql
def test_two_runs_of_one_event_ending_at_once_leave_it_done_with_both_attempts(app, client):
    """A success's end is one statement on PostgreSQL, whose roll-up reads the event's other
    deliveries: it must run after the event's lock, so that the second run to end sees the first."""
    post_event(client, unlocked(4))
    first, second = sorted(d.id for d in deliveries(app))
    runs = Runtime.of(app).db.run_engine
    with runs.connect() as one, runs.connect() as other:
        store_a, store_b = RunStore(one), RunStore(other)
        (claim_a, row_a), (claim_b, row_b) = store_a.claim(first), store_b.claim(second)
        assert store_a.locked(claim_a) is not None  # the first run ends: the event is locked

        def end_second() -> None:
            assert store_b.locked(claim_b) is not None
            store_b.finished(claim_b, "succeeded", row_b.event_id, None, _attempt(claim_b, utcnow()))
            store_b.commit()

        second_run = threading.Thread(target=end_second)
        second_run.start()
        second_run.join(0.5)
        assert second_run.is_alive(), "the second run's end waits for the first's lock"
        store_a.finished(claim_a, "succeeded", row_a.event_id, None, _attempt(claim_a, utcnow()))
        store_a.commit()
        second_run.join(10)
        assert not second_run.is_alive()
    assert {d.status for d in deliveries(app)} == {"succeeded"}
    with Runtime.of(app).db.session() as session:
        assert session.scalar(sa.select(Event.status)) == "done"
        assert sorted(session.scalars(sa.select(DeliveryAttempt.delivery_id))) == [first, second]
