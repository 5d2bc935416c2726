"""Running one delivery: claim it, take the subscriber's lock, wait for its turn (a subscriber's
deliveries reach a destination in the order their events arrived: `_turn`), let its destination
deliver, and record the outcome that `workers.classify` decides.

Retry times live in the database (next_attempt_at): a delivery that waits is pending with no
`enqueued_at`, and the workers' dispatcher (workers.dispatch) publishes it once it is due. No
broker countdowns: a delayed message would wait behind the queue's backlog and hold a worker's
prefetch, and Redis redelivers one delayed past its visibility timeout again and again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from relay.models import DeliveryStatus, Lane, utcnow
from relay.observability import report, report_exception
from relay.runtime import Runtime
from relay.sealing import SealedDataError
from relay.subjects import email_digest, id_digest
from schemas.events import EVENTS, validate_event
from schemas.personal import personal_strings
from workers import identity
from workers.classify import Action, Verdict, backoff, classify
from workers.context import DeliveryContext, Progress
from workers.lease import Claim, handed_back_if_stopped, kept_alive
from workers.locks import subject_locks
from workers.outcomes import Deferred
from workers.run_store import RunStore
from workers.throttle import Pacing, Slot
from workers.vendor_http import RateLimitHeaders

log = logging.getLogger("relay.delivery")
# A delivery whose turn has not come looks again this long after the earlier one is due (it
# runs then: a vendor call or three), and at least once a minute whatever that one's backoff.
TURN_WAIT_S = 0.5
MAX_TURN_WAIT_S = 60.0


@dataclass(frozen=True)
class Run:
    """One run of a delivery, for the outcome's log line, metrics and attempt row."""

    claim: Claim
    event_id: int
    event_type: str
    destination: str
    received_at: datetime
    steps_before: frozenset[str] = frozenset()  # the steps finished when it started
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Answer:
    """The vendor's last answer in a run: its status, request id and stated rate limits."""

    status: int | None = None
    request_id: str | None = None
    rate_limits: dict | None = None

    @classmethod
    def of(cls, client, limits_before: RateLimitHeaders | None) -> Answer:
        """`client`'s last answer in this run. Its rate limits are the account's latest answer,
        whichever run got it: they are this run's only if they changed while it ran (each answer
        reads new ones)."""
        limits = client.last_rate_limit
        stated = None
        if limits is not None and limits is not limits_before:
            stated = {name: value for name, value in asdict(limits).items() if value is not None} or None
        return cls(client.last_status, client.last_request_id, stated)


def run_delivery(delivery_id: int, runtime: Runtime) -> str:
    """Perform delivery `delivery_id` if it is due and pending; return the run's outcome:
    succeeded, superseded, failed, retried, deferred, held (its destination is held: back to the
    store, untouched), or skipped (not due, or not ours). The run holds one connection of the
    store throughout (workers.run_store)."""
    with runtime.db.run_engine.connect() as connection:
        return _run(RunStore(connection), delivery_id, runtime)


def _run(store: RunStore, delivery_id: int, runtime: Runtime) -> str:
    claimed = store.claim(delivery_id)
    if claimed is None:
        return "held" if _returned_if_held(store, delivery_id) else "skipped"
    claim, delivery = claimed  # the delivery and what the run reads of its event
    run = Run(
        claim,
        delivery.event_id,
        delivery.type,
        delivery.destination,
        delivery.received_at,
        frozenset(delivery.progress or {}),
    )
    try:
        # Opened only now the claim is committed: one this process cannot open must not undo it.
        payload = runtime.db.sealer.open(delivery.stored_payload)
    except SealedDataError as exc:  # this process lacks the key that sealed it: the classifier says wait
        verdict = classify(exc)
        if exc.key_id not in runtime.warned_keys:  # once per process: each delivery's own line says it too
            runtime.warned_keys.add(exc.key_id)
            log.warning("deliveries wait: %s", verdict.reason)
        return _apply(store, runtime, run, verdict)
    _, data, errors = validate_event(payload)
    if errors is not None or data is None:
        no_longer_valid = Verdict(Action.FAIL, "stored payload no longer validates; replay after a fix")
        return _finish(store, runtime, run, failed=no_longer_valid)

    destination = runtime.config.destinations[delivery.destination]
    # A live delivery that failed before is the retry lane (its own reserve, workers.reserves).
    retry = delivery.attempts - 1 - delivery.deferrals > 0
    pacing = Pacing(lane=Lane(delivery.lane), reserved=Slot.from_json(delivery.throttle_slot), retry=retry)
    client = destination.client(runtime).for_run(pacing, personal_strings(payload), before_call=store.flush)
    limits_before = client.last_rate_limit
    ctx = DeliveryContext(
        destination=delivery.destination,
        delivery_id=delivery_id,
        event_id=run.event_id,
        event_type=run.event_type,
        data=data,
        subscribers=EVENTS[run.event_type].subscribers(data),
        received_at_ms=int(run.received_at.timestamp() * 1000),
        runtime=runtime,
        client=client,
        progress=Progress(
            delivery.progress or {},
            delivery.step_times or {},
            save=lambda steps, times: store.save_progress(claim, steps, times),
        ),
        store=store,
    )
    lookup_key = runtime.config.lookup_key
    subjects = [identity.subscriber_key(s, lookup_key) for _, s in ctx.subscribers]
    try:
        with (
            handed_back_if_stopped(claim, runtime),
            subject_locks(runtime.redis, delivery.destination, subjects) as locks,
            kept_alive(claim, locks, runtime),
        ):
            turn = _turn(store, claim, delivery, run.event_id, _digests(ctx.subscribers, lookup_key))
            if turn is None:  # erased (relay subscribers forget) while it waited for the locks
                return _lost(run)
            turn.wait_if_not_ours()
            outcome = destination.deliver(ctx, destination.sends(run.event_type))
    except Exception as exc:  # every outcome, expected or not, goes through the one classifier
        verdict = classify(exc)
        if verdict.trace:
            report_exception(exc, tags={"destination": delivery.destination, "event_type": run.event_type})
        return _apply(store, runtime, run, verdict, Answer.of(client, limits_before))
    return _finish(
        store, runtime, run, superseded=outcome == DeliveryStatus.SUPERSEDED, answer=Answer.of(client, limits_before)
    )


def _returned_if_held(store: RunStore, delivery_id: int) -> bool:
    """Whether the delivery waits because its destination is held. One published before the hold
    began, and taken by a worker since, goes back to the store as it was (no attempt, nothing
    spent), no longer enqueued, so that it counts as out neither for the dispatcher nor for the
    sweep, and the dispatcher publishes it after the resume."""
    held, unpublished = store.returned_if_held(delivery_id)
    if unpublished:
        log.info(
            "delivery %s held: its destination is held; it waits in the store",
            delivery_id,
            extra={"delivery_id": delivery_id, "outcome": "held"},
        )
    return held


@dataclass(frozen=True)
class Turn:
    """The first (lowest id) of the unfinished deliveries that come before this one (None: its
    turn), and the latest time any of them is due."""

    before: int | None
    due_at: datetime | None

    def wait_if_not_ours(self) -> None:
        if self.before is None or self.due_at is None:
            return
        wait_s = min(max((self.due_at - utcnow()).total_seconds(), 0.0) + TURN_WAIT_S, MAX_TURN_WAIT_S)
        raise Deferred(wait_s, f"waits for delivery {self.before}, which arrived earlier for this subscriber")


def _turn(store: RunStore, claim: Claim, delivery, event_id: int, digests: list[str]) -> Turn | None:
    """None if the run no longer holds the delivery (erased while it waited for the locks); else
    whether it is the delivery's turn. Deliveries reach a destination in the order their events
    arrived (event ids) for each subscriber they name, within a lane: one waits while an earlier
    delivery of its destination and lane, of an event naming one of its subscribers (any id or
    email of theirs: event_subjects' digests), is pending or in flight, retries and holds
    included; a finished one (succeeded, superseded, failed) never holds it back. A catch-up
    delivery never holds back a live one, nor the reverse: a replay or a backfill of old events
    must not stop live traffic for hours; the destinations' versions keep an older value from
    replacing a newer one (workers.sprig). One statement, the run's check that it still holds
    the delivery in it: the subjects' digest index, then the index of unfinished deliveries by
    event (ix_deliveries_unfinished_event)."""
    ours, before, due_at = store.turn(claim, event_id, delivery.destination, delivery.lane, digests)
    return Turn(before, due_at) if ours else None


def _digests(subscribers, lookup_key: str | None) -> list[str]:
    """The event_subjects digests of every id and email of the delivery's subscribers."""
    return [id_digest(s.id, lookup_key) for _, s in subscribers if s.id] + [
        email_digest(s.email, lookup_key) for _, s in subscribers if s.email
    ]


def _apply(store: RunStore, runtime: Runtime, run: Run, verdict: Verdict, answer: Answer = Answer()) -> str:
    config = runtime.config
    if verdict.action == Action.FAIL:
        return _finish(store, runtime, run, failed=verdict, answer=answer)
    deferred = verdict.action == Action.DEFER
    delivery = store.locked(run.claim)
    if delivery is None:
        store.release()
        return _lost(run)
    deferrals = delivery.deferrals + (1 if deferred else 0)
    # A replay starts a new life: its age counts from the replay. Time held is not its own
    # (read only when the age would end it: a hold can only make it younger).
    born, now = delivery.replayed_at or delivery.created_at, utcnow()
    age_s = (now - born).total_seconds()
    if age_s >= config.retry_max_age_s:
        age_s -= store.held_s(run.destination, born, now)
    failures = delivery.attempts - deferrals
    gave_up = None
    if not deferred and failures >= config.retry_max_attempts:
        gave_up = f"gave up after {failures} failed attempts"
    elif age_s >= config.retry_max_age_s:  # deferrals too: nothing stays pending forever
        gave_up = f"gave up after {age_s / 3600:.1f} h"
    if gave_up:
        if deferred:
            store.add_deferral(run.claim)
        store.commit()
        reason = f"{gave_up}: {verdict.reason_for(run.destination)}"
        return _finish(store, runtime, run, failed=replace(verdict, reason=reason, call=None), answer=answer)
    wait_s = verdict.wait_s if verdict.wait_s is not None else backoff(failures, config.retry_base_s)
    waiting = {
        "deferrals": deferrals,
        "throttle_slot": verdict.slot.to_json() if verdict.slot else None,
        "next_attempt_at": utcnow() + timedelta(seconds=wait_s),
    }
    # Why it is still pending, for the operator. Relay's own passing deferrals (throttle,
    # breaker, lock: no kind) do not hide the vendor error that led to them.
    parked = verdict.reason.startswith("parked:")  # a reserve's: the operator must see it
    if not deferred or verdict.kind is not None or parked or not delivery.last_error:
        waiting |= _error_of(verdict, run.destination)
    outcome = "deferred" if deferred else "retried"
    store.pending_again(run.claim, waiting)
    store.add_attempt(_attempt(run, delivery.progress, outcome, verdict, answer))
    store.commit()
    _record(
        runtime,
        run,
        outcome,
        f"in {wait_s:.1f} s: {verdict.reason_for(run.destination)}",
        verdict,
        answer,
        wait_s=wait_s,
    )
    return outcome


def _error_of(verdict: Verdict, destination: str) -> dict:
    return {
        "last_error": verdict.reason_for(destination),
        "last_status_code": verdict.status_code,
        "last_error_trace": list(verdict.trace) or None,
    }


def _finish(
    store: RunStore,
    runtime: Runtime,
    run: Run,
    failed: Verdict | None = None,
    superseded: bool = False,
    answer: Answer = Answer(),
) -> str:
    """`answer`: the vendor's last answer, for the log line and the attempt's row."""
    status = DeliveryStatus.FAILED if failed else DeliveryStatus.SUPERSEDED if superseded else DeliveryStatus.SUCCEEDED
    delivery = store.locked(run.claim)
    if delivery is None:
        store.release()
        return _lost(run)
    error = _error_of(failed, run.destination) if failed else None
    store.finished(run.claim, status, run.event_id, error, _attempt(run, delivery.progress, status, failed, answer))
    store.commit()
    reason = failed.reason_for(run.destination) if failed else ""
    _record(runtime, run, status, reason, failed, answer, finished=True)
    if failed:
        kind = failed.kind or ("internal" if failed.trace else "relay")
        # Once per delivery, when it reaches the dead-letter state; grouped by vendor and error.
        # The reason is Relay's or the vendor's scrubbed message: no payload value.
        report(
            f"delivery to {run.destination} failed: {reason}",
            tags={
                "destination": run.destination,
                "event_type": run.event_type,
                "error_kind": kind,
                "attempts": str(delivery.attempts),
            },
            extras={"delivery_id": run.claim.delivery_id, "event_id": run.event_id},
            fingerprint=["delivery-failed", run.destination, kind, str(failed.status_code or "")],
        )
    return status


def _record(
    runtime: Runtime,
    run: Run,
    outcome: str,
    detail: str,
    verdict: Verdict | None = None,
    answer: Answer = Answer(),
    finished: bool = False,
    wait_s: float | None = None,
) -> None:
    """The run's one log line and its metrics. The reason and the wait are fields of their own
    too: `relay dev`'s terminal (web.cli.live) reads them, not the message."""
    metrics = runtime.metrics
    metrics.count("relay_deliveries_total", destination=run.destination, outcome=outcome)
    if finished:
        metrics.observe(
            "relay_delivery_latency_seconds", (utcnow() - run.received_at).total_seconds(), destination=run.destination
        )
    level = logging.WARNING if outcome == DeliveryStatus.FAILED else logging.INFO
    log.log(
        level,
        "delivery %s %s%s",
        run.claim.delivery_id,
        outcome,
        f" {detail}" if detail else "",
        extra={
            "event_id": run.event_id,
            "delivery_id": run.claim.delivery_id,
            "destination": run.destination,
            "event_type": run.event_type,
            "attempt": run.claim.attempt,
            "outcome": outcome,
            "duration_ms": round((time.monotonic() - run.started) * 1000, 1),
            "vendor_status": (verdict.status_code if verdict else None) or answer.status,
            "vendor_request_id": (verdict.request_id if verdict else None) or answer.request_id,
            "reason": verdict.reason_for(run.destination) if verdict else None,
            "retry_in_s": round(wait_s, 1) if wait_s is not None else None,
        },
    )


def _attempt(run: Run, progress: dict | None, outcome: str, verdict: Verdict | None, answer: Answer) -> dict:
    """The run's row in the attempt history, written in the transaction that records its end.
    Its error is the reason the delivery records (scrubbed: never a payload value)."""
    return {
        "delivery_id": run.claim.delivery_id,
        "attempt": run.claim.attempt,
        "started_at": run.started_at,
        "finished_at": utcnow(),
        "outcome": outcome,
        "vendor_status": (verdict.status_code if verdict else None) or answer.status,
        "vendor_request_id": (verdict.request_id if verdict else None) or answer.request_id,
        "duration_ms": round((time.monotonic() - run.started) * 1000),
        "error": verdict.reason_for(run.destination) if verdict else None,
        "steps": sorted(set(progress or {}) - run.steps_before) or None,
        "rate_limits": answer.rate_limits,
    }


def _lost(run: Run) -> str:
    # Another run holds the delivery now (this one's lease ran out), or an erasure ended it.
    log.warning(
        "delivery %s: no longer this run's (its lease was taken over, or it was erased); this run's outcome is dropped",
        run.claim.delivery_id,
        extra={"delivery_id": run.claim.delivery_id, "outcome": "skipped"},
    )
    return "skipped"
