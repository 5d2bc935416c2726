"""Deliveries reach a destination in the order their events arrived, for each subscriber and
within a lane (workers.engine._turn): a later one waits, spending no retry budget, while an
earlier one is pending or in flight; a finished one, another subscriber's or another lane's holds
nothing back. Against the sandbox, through the engine, and through a worker."""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from celery.contrib.testing.worker import start_worker

from relay.models import Delivery, DeliveryAttempt, Lane
from relay.runtime import Runtime
from testbed.apps import deliver, deliveries, events, post_event, sandbox_state
from testbed.drills.traffic import reward_event
from testbed.waiting import wait_for

AFTER = re.compile(r"\(after (\d+) referrals?\)")  # the note's first line states the count


def unlock(referrals: int, subscriber: int = 0) -> dict:
    payload = reward_event("reward_unlocked", subscriber)
    payload["referrals"] = payload["subscriber"]["tot_referrals"] = referrals
    return payload


def spruce_ids(app) -> list[int]:
    return [d.id for d in deliveries(app) if d.destination == "spruce"]


def notes_in_order(sandbox) -> list[list[int]]:
    """Each conversation's notes, as the referral counts they state, in the order Spruce holds them."""
    spruce = sandbox_state(sandbox)["spruce"]
    return [
        [int(m.group(1)) for item in items if item["isInternalNote"] and (m := AFTER.search(item["text"]))]
        for items in spruce["items"].values()
    ]


def set_lane(app, delivery_id: int, lane: Lane) -> None:
    with Runtime.of(app).db.session() as session:
        session.execute(sa.update(Delivery).where(Delivery.id == delivery_id).values(lane=lane))
        session.commit()


def attempts_of(app, delivery_id: int) -> list[tuple[str, str | None]]:
    with Runtime.of(app).db.session() as session:
        rows = session.execute(
            sa.select(DeliveryAttempt.outcome, DeliveryAttempt.error)
            .where(DeliveryAttempt.delivery_id == delivery_id)
            .order_by(DeliveryAttempt.id)
        )
        return [(outcome, error) for outcome, error in rows]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # about the engine, not the store
def test_while_an_earlier_delivery_retries_the_later_ones_of_its_subscriber_wait_then_arrive_in_order(
    relay_app, sandbox
):
    app = relay_app(RELAY_RETRY_BASE_S="4")
    for referrals in (1, 2, 3, 4):
        post_event(app.test_client(), unlock(referrals))
    first, *later = spruce_ids(app)
    sandbox.configure(faults=[{"vendor": "spruce", "status": 500, "times": 1, "path_prefix": "/"}])
    assert deliver(app, first) == "retried"  # due again in 2 to 4 s, long after the worker starts; the others now

    with start_worker(app.extensions["celery"], pool="threads", concurrency=4,
                      perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
        assert wait_for(lambda: [e.status for e in events(app)] == ["done"] * 4, timeout=30)

    assert notes_in_order(sandbox) == [[1, 2, 3, 4]]
    deferred = {error for later_id in later for outcome, error in attempts_of(app, later_id) if outcome == "deferred"}
    assert f"waits for delivery {first}, which arrived earlier for this subscriber" in deferred, deferred
    for delivery in deliveries(app):
        if delivery.id in later:  # only the run that reached Spruce counts against the retry budget
            assert delivery.attempts - delivery.deferrals == 1, (delivery.id, delivery.attempts, delivery.deferrals)


def test_a_later_delivery_waits_for_an_earlier_one_of_its_lane_but_not_another_subscriber_or_lane(app, sandbox):
    client = app.test_client()
    post_event(client, unlock(1))
    post_event(client, unlock(1, subscriber=1))
    post_event(client, unlock(2))
    post_event(client, unlock(3))
    first, other_subscriber, second, third = spruce_ids(app)

    assert deliver(app, second) == "deferred"  # the first is pending: not its turn
    assert deliver(app, other_subscriber) == "succeeded"  # another subscriber's
    set_lane(app, third, Lane.CATCH_UP)  # as a replay or a backfill would have it
    assert deliver(app, third) == "succeeded"  # live deliveries hold back no catch-up one
    set_lane(app, first, Lane.CATCH_UP)
    assert deliver(app, second) == "succeeded"  # nor the reverse
    assert deliver(app, first) == "succeeded"
    assert attempts_of(app, second)[0] == (
        "deferred", f"waits for delivery {first}, which arrived earlier for this subscriber"
    )


def test_an_earlier_delivery_that_failed_for_good_holds_nothing_back(app, sandbox):
    client = app.test_client()
    post_event(client, unlock(1))
    post_event(client, unlock(2))
    first, second = spruce_ids(app)
    sandbox.configure(faults=[{"vendor": "spruce", "status": 400, "times": 1, "path_prefix": "/"}])
    assert deliver(app, first) == "failed"
    assert deliver(app, second) == "succeeded"
    assert notes_in_order(sandbox) == [[2]]
