"""The Budget drill (issue 19): a good citizen of the clinic's Spruce budget. Spruce counts every
integration of an organization against one budget per minute and per day; here it allows `limit`
calls a minute and `daily_limit` a "day" of `day_s` seconds, and another integration of the clinic
spends one call every `other_every_s`. Deliveries of notes Spruce refused earlier are replayed
(catch-up) while live webhooks come in, past the first turn of the day.

What it measures: how soon after its 200 each live webhook's Spruce delivery was done, Spruce's
429s, the lowest daily remaining (after anyone's call, and after Relay's), when the replay parked
on the day and when it finished, what was still waiting at the end, and whether anything was
done twice; `criteria` judges it by the issue's five. bench/drills/budget.py runs it at the
issue's size, tests/test_drill_budget.py small."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from operations.audit import Actor
from operations.replay import replay
from relay.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, EventStatus, utcnow
from relay.runtime import Runtime
from testbed.drills.processes import Drill
from testbed.drills.traffic import Stream, post_all, referral_event, reward_event, through_app
from testbed.drills.verdicts import unsettled, webhook_key
from testbed.waiting import wait_for

# Earlier: every note post refused, as Spruce refuses a note it finds invalid (permanent: failed).
NOTE_REFUSED = {"vendor": "spruce", "status": 400, "times": None, "method": "POST", "path_prefix": "/conversations/t_"}
SETUP_RATE = "1000/1s"  # the earlier deliveries, before the drill proper: as fast as they go
SETTLE_S = 300.0
WORKERS_READY_S = 60.0
# Live webhooks: a reward note for a subscriber whose contact and note conversation Relay already
# knows (one Spruce call: the note), or a referral of a new subscriber (two: search, create).
LIVE_KINDS = ("note", "referral")
FINISHED = (DeliveryStatus.SUCCEEDED, DeliveryStatus.SUPERSEDED)
# The reason a reserve gives a catch-up delivery it parks on Spruce's day (workers.reserves).
PARKED_ON_THE_DAY = "parked: Spruce's daily remaining at its catch-up reserve%"


@dataclass
class BudgetRun:
    """What the drill measured. Times in seconds from the start of the first day (the moment the
    budget was set, just before the replay and the first live webhook)."""

    live_kind: str
    day_s: float
    took_s: float
    live_posted: int
    live_accepted: int
    # Per accepted live webhook: seconds from its 200 (its event's receipt) until its Spruce
    # delivery was done; None: not done when the drill ended.
    live_delays: list[float | None]
    replayed: int
    replayed_done: int
    replay_finished_s: float | None  # when the last replayed delivery was done
    # Replayed deliveries' runs a reserve parked on the day, the first of them, and the lowest
    # daily remaining Spruce stated to a replayed call made before it.
    replay_parked: int
    replay_parked_s: float | None
    replay_lowest_remaining_before_parking: int | None
    spruce_429s: int
    lowest_daily_remaining: int | None
    lowest_daily_remaining_after_relay: int | None
    days: list[dict]  # the sandbox's day windows: relay, other, relay_refused, lowest_remaining
    relay_calls: int
    other_calls: int
    # Live events and replayed deliveries not done when the drill ended, and Spruce deliveries by
    # status then (pending ones wait: the longest wait left, seconds).
    unfinished: int
    unfinished_statuses: dict[str, int]
    longest_wait_left_s: float | None
    duplicates: int  # effects a vendor holds more often than once
    vendor_answers: dict[str, dict[str, int]] = field(default_factory=dict)

    def within(self, seconds: float) -> int:
        return sum(1 for delay in self.live_delays if delay is not None and delay <= seconds)

    @property
    def slowest_s(self) -> float | None:
        reached = [delay for delay in self.live_delays if delay is not None]
        return max(reached) if reached else None

    @property
    def live_unreached(self) -> int:
        return sum(1 for delay in self.live_delays if delay is None)


def budget_drill(
    drill: Drill,
    sandbox,
    replays: int = 300,
    live: int = 150,
    per_second: float = 1.0,
    limit: int = 240,
    daily_limit: int = 400,
    day_s: float = 120.0,
    other_every_s: float = 2.0,
    live_kind: str = "note",
    workers: int = 2,
    within_s: float = 60.0,
    **settings: str,
) -> BudgetRun:
    """Earlier: `replays` reward notes Spruce refused (failed), and for a "note" drill one
    delivered note for each of the `live` subscribers to come. Then the budget is set, the failed
    deliveries are replayed and `live` webhooks arrive at `per_second`, with Relay told Spruce's
    minute limit (SPRUCE_RATE_LIMIT) and `settings` (RELAY_PARK_PROBE: shorter than the day);
    the drill waits at most `within_s` after the last one for everything to be done."""
    assert live_kind in LIVE_KINDS, live_kind
    started = time.monotonic()
    live_subscribers = range(replays, replays + live)
    known = live_subscribers if live_kind == "note" else range(0)
    failed_ids = _earlier_failures(drill, sandbox, replays, known, workers)

    app = drill.app(SPRUCE_RATE_LIMIT=f"{limit}/60s", **settings)
    runtime = Runtime.of(app)
    watched = [drill.start_worker(f"worker{n}", supervised=True, as_procfile=True) for n in range(workers)]
    watched.append(drill.start_beat())
    assert _replying(app, workers), drill.logs()

    sandbox.configure(
        rate_limit={
            "spruce": {
                "limit": limit,
                "window_s": 60,
                "daily_limit": daily_limit,
                "day_s": day_s,
                "other_integration_every_s": other_every_s,
            }
        }
    )
    day_one_at = utcnow()
    result = replay(runtime, failed_ids, force=False, dry_run=False, destination="spruce", actor=Actor.cli("drill"))
    payloads = [
        reward_event("reward_unlocked", n) if live_kind == "note" else referral_event(n) for n in live_subscribers
    ]
    stream = Stream(through_app(app), payloads, per_second=per_second)
    stream.wait(timeout=live / per_second + 60)
    wait_for(lambda: unsettled(app) == 0, timeout=within_s, interval=0.5)
    dead = [process.args for process in watched if process.poll() is not None]
    assert not dead, f"processes died: {dead}\n{drill.logs()}"
    measured = _measured(app, sandbox, stream, result.delivery_ids, day_one_at)
    return BudgetRun(live_kind, day_s, time.monotonic() - started, **measured)


def criteria(
    run: BudgetRun, live_within: float, live_reserve: int, catch_up_reserve: int
) -> dict[str, tuple[bool, str]]:
    """Issue 19's five criteria: each one's verdict and what it was judged on. The reserves in
    calls (the daily limit's share, rounded up). The replay parked "at" its reserve when no
    replayed call before it saw much more remaining: at most the reserve and the calls the live
    reserve keeps (calls in flight, the other integration's)."""
    lowest = run.lowest_daily_remaining_after_relay
    lowest_before_parking = run.replay_lowest_remaining_before_parking
    parked = (
        f"parked {run.replay_parked} times on the day, the first {run.replay_parked_s:.0f} s in, "
        f"the lowest daily remaining a replayed call saw before {lowest_before_parking} "
        f"(its reserve {catch_up_reserve}); "
        if run.replay_parked_s is not None
        else "never parked on the day; "
    )
    finished = f"the last done {run.replay_finished_s:.0f} s in" if run.replay_finished_s is not None else "not done"
    return {
        f"live webhooks all at Spruce within {live_within:g} s": (
            run.within(live_within) == run.live_accepted == run.live_posted,
            f"{run.within(live_within)} of {run.live_posted}",
        ),
        "the replay parked on the day's reserve and finished after the day turned": (
            run.replay_parked_s is not None
            and run.replay_parked_s < run.day_s
            and lowest_before_parking is not None
            and lowest_before_parking <= catch_up_reserve + max(live_reserve, 2)
            and run.replay_finished_s is not None
            and run.replay_finished_s > run.day_s,
            f"{parked}{run.replayed_done} of {run.replayed} done, {finished} (the day turned at {run.day_s:g} s)",
        ),
        "0 Spruce 429s": (run.spruce_429s == 0, f"{run.spruce_429s}"),
        f"daily remaining never below the live reserve ({live_reserve}) because of Relay": (
            lowest is None or lowest >= live_reserve,
            f"lowest after a call of Relay's: {lowest}",
        ),
        "nothing lost or done twice": (
            run.unfinished == 0 and run.duplicates == 0,
            f"not done {run.unfinished}, done twice {run.duplicates}",
        ),
    }


def reserve_calls(share: float, daily_limit: int) -> int:
    """A reserve's share of the daily limit in calls."""
    return math.ceil(share * daily_limit)


def _earlier_failures(drill: Drill, sandbox, replays: int, known: range, workers: int) -> list[int]:
    """Relay at full speed (`workers` workers): the `known` subscribers' reward notes delivered, then `replays`
    notes refused by Spruce. Its processes stop afterwards, and the throttle forgets their calls
    (hours have passed, as far as the drill is concerned). The ids of the failed events."""
    app = drill.app(SPRUCE_RATE_LIMIT=SETUP_RATE)
    setup = [drill.start_worker(f"setup{n}", supervised=True, as_procfile=True) for n in range(workers)]
    settle = SETTLE_S + (replays + len(known)) / 5
    if known:
        post_all(app, [reward_event("reward_redeemed", n) for n in known])
        assert wait_for(lambda: unsettled(app) == 0, timeout=settle, interval=0.5), drill.logs()
    sandbox.configure(faults=[NOTE_REFUSED])
    post_all(app, [reward_event("reward_redeemed", n) for n in range(replays)])
    assert wait_for(lambda: unsettled(app) == 0, timeout=settle, interval=0.5), drill.logs()
    sandbox.configure(faults=[])
    for process in setup:
        process.terminate()
    for process in setup:
        process.wait(timeout=30)
    runtime = Runtime.of(app)
    for key in runtime.redis.scan_iter("relay:throttle:*"):
        runtime.redis.delete(key)
    with runtime.db.session() as session:
        failed = list(session.scalars(sa.select(Event.id).where(Event.status == EventStatus.FAILED).order_by(Event.id)))
    runtime.close()
    assert len(failed) == replays, f"{len(failed)} of {replays} notes failed earlier"
    return failed


def _replying(app, workers: int) -> bool:
    """Until every worker answers a ping: the drill's clock starts with Relay ready."""
    celery = app.extensions["celery"]
    return wait_for(lambda: len(celery.control.ping(timeout=1.0) or []) >= workers, timeout=WORKERS_READY_S)


def _measured(app, sandbox, stream: Stream, replayed_ids: list[int], day_one_at: datetime) -> dict:
    accepted = {webhook_key(payload) for payload in stream.accepted}
    with Runtime.of(app).db.session() as session:
        rows = session.execute(
            sa.select(Event.dedup_key, Event.received_at, Delivery.status, Delivery.finished_at)
            .join(Delivery, Delivery.event_id == Event.id)
            .where(Delivery.destination == "spruce", Event.received_at >= day_one_at)
        ).all()
        replayed = session.execute(
            sa.select(Delivery.status, Delivery.finished_at).where(Delivery.id.in_(replayed_ids))
        ).all()
        unfinished_live = session.scalar(
            sa.select(sa.func.count())
            .select_from(Event)
            .where(Event.received_at >= day_one_at, Event.status != EventStatus.DONE)
        )
        unfinished = session.execute(
            sa.select(Delivery.status, sa.func.count(), sa.func.max(Delivery.next_attempt_at))
            .where(Delivery.destination == "spruce", Delivery.status.not_in(FINISHED))
            .group_by(Delivery.status)
        ).all()
        parkings = session.execute(
            sa.select(DeliveryAttempt.finished_at)
            .where(
                DeliveryAttempt.delivery_id.in_(replayed_ids),
                DeliveryAttempt.outcome == "deferred",
                DeliveryAttempt.error.like(PARKED_ON_THE_DAY),
            )
            .order_by(DeliveryAttempt.finished_at)
        ).all()
        first_parked = parkings[0][0] if parkings else None
        ended_at = utcnow()
        stated_to_replays = session.scalars(
            sa.select(DeliveryAttempt.rate_limits).where(
                DeliveryAttempt.delivery_id.in_(replayed_ids),
                DeliveryAttempt.started_at >= day_one_at,
                DeliveryAttempt.finished_at < (first_parked or ended_at),
            )
        ).all()
    daily_readings = [
        stated["daily_remaining"] for stated in stated_to_replays if (stated or {}).get("daily_remaining") is not None
    ]
    delays: list[float | None] = []
    for key, received_at, status, finished_at in rows:
        if key not in accepted:
            continue
        done = status == DeliveryStatus.SUCCEEDED and finished_at is not None
        delays.append((finished_at - received_at).total_seconds() if done else None)
    replayed_done = [finished for status, finished in replayed if status == DeliveryStatus.SUCCEEDED]
    budget = sandbox.state.budgets()["spruce"]
    stats = sandbox.stats()
    days = [
        {key: day[key] for key in ("relay", "other", "relay_refused", "other_refused", "lowest_remaining")}
        for day in budget["windows"]["day"]
    ]
    return dict(
        live_posted=len(stream.payloads),
        live_accepted=len(accepted),
        live_delays=delays,
        replayed=len(replayed_ids),
        replayed_done=len(replayed_done),
        replay_finished_s=(
            (max(replayed_done) - day_one_at).total_seconds()
            if len(replayed_done) == len(replayed_ids) and replayed_done
            else None
        ),
        replay_parked=len(parkings),
        replay_parked_s=(first_parked - day_one_at).total_seconds() if first_parked else None,
        replay_lowest_remaining_before_parking=min(daily_readings, default=None),
        spruce_429s=stats.get("spruce", {}).get("429", 0),
        lowest_daily_remaining=budget["lowest_daily_remaining"],
        lowest_daily_remaining_after_relay=budget["lowest_daily_remaining_after_relay"],
        days=days,
        relay_calls=budget["relay"],
        other_calls=budget["other"],
        unfinished=unfinished_live + len(replayed_ids) - len(replayed_done),
        unfinished_statuses={str(status): count for status, count, _ in unfinished},
        longest_wait_left_s=max(
            ((latest - ended_at).total_seconds() for status, _, latest in unfinished if latest is not None),
            default=None,
        ),
        duplicates=done_twice(sandbox.snapshot()),
        vendor_answers=stats,
    )


def done_twice(state: dict) -> int:
    """Effects the vendors hold more often than once: a subscriber's contact, their note
    conversation, the same note in it, a Sprig event occurrence. (A subscriber may hold several
    notes, each of another event.)"""
    spruce = state["spruce"]
    excess = Counter(c["emailAddresses"][0]["value"] for c in spruce["contacts"] if c["emailAddresses"])
    twice = sum(n - 1 for n in excess.values() if n > 1)
    conversations = Counter(",".join(sorted(c["associatedContactIds"])) for c in spruce["conversations"])
    twice += sum(n - 1 for n in conversations.values() if n > 1)
    for conversation in spruce["conversations"]:
        notes = Counter(i.get("text") for i in spruce["items"].get(conversation["id"], []) if i["isInternalNote"])
        twice += sum(n - 1 for n in notes.values() if n > 1)
    for user in state["sprig"]["users"].values():
        twice += sum(event["count"] - 1 for event in user["events"] if event["count"] > 1)
    return twice
