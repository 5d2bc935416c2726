"""The sweep's word about a broker that lost its data: a warning only when it handed deliveries
back because of it (and how many), not on every start of an empty Redis."""
from __future__ import annotations

import logging

import redis

from relay.runtime import Runtime
from testbed.apps import deliveries, dispatch_stored, post_event, run_sweep
from testbed.examples import load_fixture
from testbed.waiting import wait_for
from workers.dispatch import DispatchThread


def sweep_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "relay.sweep" and "marker" in r.getMessage()]


def test_a_first_sweep_with_nothing_enqueued_warns_of_nothing(app, caplog):
    caplog.set_level(logging.DEBUG, logger="relay.sweep")

    assert run_sweep(app)["broker_forgot"] == 1  # an empty Redis: every start of `relay dev`

    [record] = sweep_records(caplog)
    assert record.levelno == logging.INFO
    assert not [r for r in caplog.records if r.name == "relay.sweep" and r.levelno >= logging.WARNING]


def test_a_broker_that_lost_enqueued_deliveries_is_one_warning_with_their_number(app, client, redis_url, caplog):
    run_sweep(app)
    assert post_event(client, load_fixture("new_referral")).status_code == 200
    assert dispatch_stored(app) == 2  # sprig and spruce, enqueued
    redis.Redis.from_url(redis_url).flushdb()  # the messages and the marker are gone
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="relay.sweep")

    assert run_sweep(app)["handed_back"] == 2

    [record] = sweep_records(caplog)
    assert record.levelno == logging.WARNING
    assert "2 pending deliveries handed back" in record.getMessage()
    assert run_sweep(app)["broker_forgot"] == 0 and len(sweep_records(caplog)) == 1  # once


def test_a_worker_starting_on_an_emptied_broker_hands_back_before_it_publishes(app, client, redis_url, caplog):
    run_sweep(app)
    assert post_event(client, load_fixture("new_referral")).status_code == 200
    assert dispatch_stored(app) == 2
    redis.Redis.from_url(redis_url).flushdb()  # Redis restarted empty while no worker ran
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="relay.sweep")

    dispatcher = DispatchThread(Runtime.of(app), app.extensions["celery"])
    dispatcher.start()
    try:
        assert wait_for(lambda: all(d.enqueued_at is not None for d in deliveries(app)), timeout=10)
    finally:
        dispatcher.stop()

    [record] = sweep_records(caplog)
    assert record.levelno == logging.WARNING and "2 pending deliveries handed back" in record.getMessage()
    # The first sweep finds the marker the worker set: what its dispatcher published is not lost.
    assert run_sweep(app) == {"released": 0, "handed_back": 0, "broker_forgot": 0}
    assert len(sweep_records(caplog)) == 1
