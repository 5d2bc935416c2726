"""A delivery run's store (workers.run_store): one connection per run from a pool that skips the
pre-ping, so a connection PostgreSQL dropped is found by the run's first statement, the claim,
which starts again on a new one; and a run's saves wait for its next write."""
from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from relay.models import DestinationLink
from relay.runtime import Runtime
from testbed.apps import deliver, deliveries, post_event
from testbed.examples import load_fixture

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
