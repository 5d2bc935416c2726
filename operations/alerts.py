"""Alerts: which conditions hold now, and which alerts that makes. Beat has the evaluation run
every relay.queue.ALERTS_INTERVAL (the task at the end of this module); each alert it decides is
then sent by a task per sink (workers.alerts).

Conditions. Each kind is one small function in ALERT_CHECKS, the registry: it reads the runtime
(through `Readings`, shared by the checks of one evaluation) and yields a `Condition` for each
subject in that state now (a destination, a failure group, Relay itself), or `Unknown` where it
cannot tell (what was stored about it is then kept as it was, neither resolved nor repeated). A
check that raises counts as Unknown for its whole kind (logged), and the other kinds go on.
- breaker: a destination's circuit breaker open or half-open (workers.breaker, in Redis);
- daily_budget: the share of the vendor's daily limit used, by its last stated headers
  (delivery_attempts.rate_limits, as the console's overview reads them), from 50% on; a rise to
  80, 90 or 100% is an alert at once;
- backlog_age: a destination's oldest waiting live delivery older than RELAY_ALERT_BACKLOG_AGE
  (catch-up work, replays and backfills, waits by design and is left out);
- failure_group: a group of deliveries failed in the last FAILURES_WINDOW, grouped as the
  console's Failures page groups them (operations.failures);
- sweep: doctor's sweep check failing (no sweep finished lately: beat or every worker down);
- held: a destination an operator holds (operations.destinations; its resume resolves it). The
  operator's reason and name stay out of the alert (the audit log has them);
- parked: a destination with deliveries a reserve parked (workers.reserves: its vendor's window
  is down to a lane's reserve, kept for the organization's other tools), by lane; unparked (its
  resolution) when none is left. While a destination is held, its state is kept as it was.
To add one, write its function and add an AlertCheck to ALERT_CHECKS; nothing else changes.

What an alert may carry: ids, counts, states, status codes, vendor request ids and console
links. A failure group is named by its destination, vendor status and kind; the first words of
its error, which may quote a vendor's message, never leave Relay (its subject is a digest of
them).

Transitions, kept in Redis (STATE: one JSON entry per condition, so every process agrees):
- a condition that starts is `opened`, unless the same condition at the same level was opened
  less than RELAY_ALERT_REPEAT ago (a flapping breaker alerts once per window);
- one that lasts is sent again (`repeat`) RELAY_ALERT_REPEAT after the last send; one whose
  level rises (a budget from 50 to 80%) is `opened` again at the new level at once;
- one that ends is `resolved`, if it had been announced.
One evaluation runs at a time (a Redis lock); besides, each alert takes a SET NX marker per
condition, status and window first, so that two evaluations (a lock that ran out) never send one
twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, cast

import redis
import sqlalchemy as sa
from celery import shared_task

from operations.destinations import Hold, holds
from operations.doctor import check_sweep
from operations.failures import FailureGroup, failure_groups
from operations.overview import RateLimits, stated_rate_limits
from operations.reserves import parked_deliveries, parked_json
from operations.stats import vendor_states
from relay.checks import FAILED
from relay.durations import human_duration
from relay.models import BACKLOG, Delivery, DeliveryAttempt, Lane, utcnow
from relay.queue import EVALUATE_ALERTS_TASK
from relay.runtime import Runtime
from workers.alerts import OPENED, REPEAT, RESOLVED, Alert, console_url, publish

log = logging.getLogger("relay.alerts")

BREAKER, HELD, PARKED, DAILY_BUDGET, BACKLOG_AGE, FAILURE_GROUP, SWEEP = (
    "breaker",
    "held",
    "parked",
    "daily_budget",
    "backlog_age",
    "failure_group",
    "sweep",
)
BUDGET_LEVELS = (50, 80, 90, 100)
# A daily figure older than a day says nothing of today's use.
RATE_LIMITS_FRESH = timedelta(days=1)
# A failure group lasts while its deliveries failed this recently.
FAILURES_WINDOW = timedelta(hours=1)
FAILURES_WINDOW_WORDS = "the last hour"
# The newest groups alerted about at once; the others wait their turn (neither opened nor resolved).
MAX_FAILURE_GROUPS = 10
OVERVIEW_PAGE = "/console/"
FAILURES_PAGE = "/console/failures?days=1"

STATE = "relay:alerts:state"
LOCK = "relay:alerts:evaluating"
SENT = "relay:alerts:sent:"
LOCK_TIMEOUT_S = 120


@dataclass(frozen=True)
class Condition:
    """One subject in an alerting state now."""

    subject: str
    summary: str  # what holds now, one line
    ended: str  # the line its resolution reads
    page: str = OVERVIEW_PAGE
    level: int = 0
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unknown:
    """A subject (None: every one of the check's kind) whose state cannot be read now."""

    subject: str | None = None


@dataclass
class Readings:
    """What the checks of one evaluation read from: the runtime, the time it runs at, and what
    several checks need, read once."""

    runtime: Runtime
    now: datetime

    @cached_property
    def holds(self) -> dict[str, Hold]:
        return holds(self.runtime)

    @cached_property
    def titles(self) -> dict[str, str]:
        """The configured destinations' titles, by name."""
        configured = self.runtime.config.configured()
        return {name: destination.settings.title or name.capitalize() for name, destination in configured.items()}


Found = Iterable[Condition | Unknown]


@dataclass(frozen=True)
class AlertCheck:
    type: str
    read: Callable[[Readings], Found]


# --- the checks -----------------------------------------------------------------------------


def breaker_conditions(readings: Readings) -> Found:
    if not readings.runtime.shares_redis:
        yield Unknown()
        return
    states = vendor_states(readings.runtime)
    for name, title in readings.titles.items():
        state = states[name]["breaker"]
        if state != "closed":
            yield Condition(
                name,
                f"{title}: circuit breaker {state}, Relay stopped calling it",
                f"{title}: circuit breaker closed, calls resume",
                facts={"destination": name, "breaker": state},
            )


def budget_conditions(readings: Readings) -> Found:
    with readings.runtime.session() as session:
        stated = stated_rate_limits(session, list(readings.titles))
    for name, title in readings.titles.items():
        limits = stated.get(name)
        if limits is None:  # no recent attempt of its stated any: not a sign the day turned over
            yield Unknown(name)
            continue
        used = _daily_use(limits, readings.now)
        if used is None:
            continue
        percent, limit, remaining = used
        level = max((level for level in BUDGET_LEVELS if percent >= level), default=0)
        if level:
            yield Condition(
                name,
                f"{title}: {percent:g}% of the vendor's daily API limit used ({remaining} of {limit} calls left)",
                f"{title}: under {BUDGET_LEVELS[0]}% of the vendor's daily API limit used",
                level=level,
                facts={
                    "destination": name,
                    "daily_limit": limit,
                    "daily_remaining": remaining,
                    "percent_used": percent,
                    "stated_at": limits.reported_at.isoformat(),
                },
            )


def _daily_use(limits: RateLimits, now: datetime) -> tuple[float, int, int] | None:
    """(share used in %, limit, remaining), when the vendor stated a daily limit lately."""
    limit, remaining = limits.values.get("daily_limit"), limits.values.get("daily_remaining")
    if limit is None or remaining is None or limit <= 0 or now - limits.reported_at > RATE_LIMITS_FRESH:
        return None
    percent = round(100 * (limit - remaining) / limit, 1)
    return percent, int(limit), int(remaining)


def backlog_conditions(readings: Readings) -> Found:
    """The oldest waiting live delivery per destination: the backlog index (ix_deliveries_backlog)
    holds only pending and in-flight deliveries."""
    threshold = readings.runtime.config.alert_backlog_age_s
    names = list(readings.titles)
    with readings.runtime.session() as session:
        rows = session.execute(
            sa.select(Delivery.destination, sa.func.count(), sa.func.min(Delivery.created_at))
            .where(BACKLOG, Delivery.destination.in_(names), Delivery.lane != Lane.CATCH_UP)
            .group_by(Delivery.destination)
        ).all()
    for name, waiting, oldest in rows:
        age = (readings.now - _utc(oldest)).total_seconds()
        if name in readings.holds:  # waiting is what a hold does: the held alert says so
            continue
        if age > threshold:
            title = readings.titles[name]
            yield Condition(
                name,
                f"{title}: the oldest waiting delivery is {human_duration(age)} old "
                f"(over {human_duration(threshold)}); {waiting} waiting",
                f"{title}: no delivery waits longer than {human_duration(threshold)}",
                facts={"destination": name, "waiting": waiting, "oldest_age_s": round(age)},
            )


def held_conditions(readings: Readings) -> Found:
    for name, hold in readings.holds.items():
        title = readings.titles.get(name, name.capitalize())
        yield Condition(
            name,
            f"{title}: held by an operator; its deliveries wait",
            f"{title}: resumed; its deliveries drain",
            facts={"destination": name, "held_at": hold.held_at.isoformat()},
        )


def parked_conditions(readings: Readings) -> Found:
    """The pending deliveries a reserve stopped, per destination and lane (ix_deliveries_backlog's
    pending rows whose last error says so). Counts and lanes only: the reason stays in Relay."""
    with readings.runtime.session() as session:
        parked = parked_deliveries(session, list(readings.titles))
    for name, found in parked.items():
        if name in readings.holds:  # nothing runs, so nothing is parked or unparked: kept as it was
            yield Unknown(name)
            continue
        by_lane = parked_json(found)["by_lane"]
        count = sum(by_lane.values())
        lanes = ", ".join(f"{lane} {n}" for lane, n in by_lane.items())
        title = readings.titles[name]
        yield Condition(
            name,
            f"{title}: {count} {_deliveries(count)} parked by a reserve ({lanes}): the vendor's window is "
            "down to what is kept for the organization's other tools; they wait, spending no attempt",
            f"{title}: unparked, no delivery waits for a reserve",
            facts={"destination": name, "parked": count, "parked_by_lane": by_lane},
        )


def failure_group_conditions(readings: Readings) -> Found:
    scan = failure_groups(readings.runtime, readings.now - FAILURES_WINDOW)
    if scan.more:  # the oldest of the window were not read: a group missing may only be unread
        yield Unknown()
    for position, summary in enumerate(scan.groups):
        group, subject = summary.group, _group_digest(summary.group)
        if position >= MAX_FAILURE_GROUPS:
            yield Unknown(subject)
            continue
        title = readings.titles.get(group.destination, group.destination.capitalize())
        status = "" if group.status is None else f", HTTP {group.status}"
        yield Condition(
            subject,
            f"{title}: {summary.count} {_deliveries(summary.count)} failed in {FAILURES_WINDOW_WORDS} "
            f"({group.kind_label}{status})",
            f"{title}: no more deliveries failed ({group.kind_label}{status}) in {FAILURES_WINDOW_WORDS}",
            page=FAILURES_PAGE,
            facts={
                "destination": group.destination,
                "status_code": group.status,
                "kind": group.kind,
                "failures": summary.count,
                "first_failed_at": summary.first_seen.isoformat(),
                "last_failed_at": summary.last_seen.isoformat(),
                "newest_event_id": summary.example_event_id,
                "vendor_request_id": _request_id(readings.runtime, summary.example_event_id, group.destination),
            },
        )


def _group_digest(group: FailureGroup) -> str:
    """A group's name in alerts: its text holds the error's first words, which stay in Relay."""
    return "group-" + hashlib.sha256(group.text.encode()).hexdigest()[:16]


def _deliveries(count: int) -> str:
    return "delivery" if count == 1 else "deliveries"


def _request_id(runtime: Runtime, event_id: int, destination: str) -> str | None:
    """The vendor's request id of that delivery's last attempt (for the vendor's support)."""
    with runtime.session() as session:
        return session.scalar(
            sa.select(DeliveryAttempt.vendor_request_id)
            .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
            .where(Delivery.event_id == event_id, Delivery.destination == destination)
            .order_by(DeliveryAttempt.id.desc())
            .limit(1)
        )


def sweep_conditions(readings: Readings) -> Found:
    check = check_sweep(readings.runtime, now=readings.now.timestamp())
    if check.status == FAILED:
        yield Condition(
            "relay",
            f"The sweep is not running: {check.detail}",
            "The sweep runs again",
        )


# The registry: one entry per kind of condition, in the order their alerts go out.
ALERT_CHECKS: list[AlertCheck] = [
    AlertCheck(BREAKER, breaker_conditions),
    AlertCheck(HELD, held_conditions),
    AlertCheck(PARKED, parked_conditions),
    AlertCheck(DAILY_BUDGET, budget_conditions),
    AlertCheck(BACKLOG_AGE, backlog_conditions),
    AlertCheck(FAILURE_GROUP, failure_group_conditions),
    AlertCheck(SWEEP, sweep_conditions),
]


# --- the evaluation -------------------------------------------------------------------------


@dataclass
class Observed:
    """What the checks said: the conditions that hold, by key, and what they could not tell."""

    holding: dict[str, tuple[str, Condition]] = field(default_factory=dict)  # key -> (type, condition)
    unknown_types: set[str] = field(default_factory=set)
    unknown_keys: set[str] = field(default_factory=set)

    def tells(self, key: str, alert_type: str) -> bool:
        return alert_type not in self.unknown_types and key not in self.unknown_keys


def read_conditions(readings: Readings, checks: Iterable[AlertCheck]) -> Observed:
    reading = Observed()
    for check in checks:
        try:
            found = list(check.read(readings))
        except Exception as exc:  # a store or Redis away: this kind stays as it was
            log.warning("alert check %s could not read (%s)", check.type, type(exc).__name__)
            reading.unknown_types.add(check.type)
            continue
        for item in found:
            if isinstance(item, Unknown):
                if item.subject is None:
                    reading.unknown_types.add(check.type)
                else:
                    reading.unknown_keys.add(f"{check.type}:{item.subject}")
            else:
                reading.holding[f"{check.type}:{item.subject}"] = (check.type, item)
    return reading


def evaluate(runtime: Runtime, now: datetime | None = None, checks: Iterable[AlertCheck] | None = None) -> list[Alert]:
    """Read the conditions, compare them with the state kept in Redis and return the alerts to
    send (and record them as sent). Nothing without REDIS_URL (each process would keep a state
    of its own), nor while another process evaluates."""
    if not runtime.shares_redis:
        return []
    now = now or utcnow()
    lock = runtime.redis.lock(LOCK, timeout=LOCK_TIMEOUT_S, blocking=False)
    if not lock.acquire():
        log.info("alerts: another process is evaluating")
        return []
    try:
        reading = read_conditions(Readings(runtime, now), ALERT_CHECKS if checks is None else checks)
        state = _load(runtime.redis)
        decided, changed, gone = decide(reading, state, now.timestamp(), runtime.config.alert_repeat_s)
        alerts = [
            _alert(runtime, key, status, entry, now)
            for key, status, entry, marker in decided
            if _first(runtime.redis, marker, runtime.config.alert_repeat_s)
        ]
        _save(runtime.redis, changed, gone)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # it ran out: the markers kept duplicates out
            log.warning("alerts: the evaluation outlasted its lock (%d s)", LOCK_TIMEOUT_S)
    return alerts


Decision = tuple[str, str, dict[str, Any], str]  # key, status, the entry as stored, the dedup marker


def decide(
    reading: Observed, state: dict[str, dict[str, Any]], now: float, repeat_s: float
) -> tuple[list[Decision], dict[str, dict[str, Any]], list[str]]:
    """The transitions (see the module's docstring): the alerts (key, status, entry, marker), the
    entries to store and the keys to forget. A pure function of its arguments."""
    decided: list[Decision] = []
    changed: dict[str, dict[str, Any]] = {}
    window = int(now // repeat_s)
    for key, (alert_type, condition) in reading.holding.items():
        before = state.get(key)
        if before and before["active"]:
            entry = {**before, "opened": dict(before["opened"])}
        else:
            entry = _episode(alert_type, condition, now, before)
        entry["level"], entry["condition"] = condition.level, _stored(condition)
        announced, level = entry["announced_level"], condition.level
        opened_at = entry["opened"].get(str(level))
        if (announced is None and (opened_at is None or now - opened_at >= repeat_s)) or (
            announced is not None and level > announced
        ):
            entry["announced_level"], entry["sent_at"] = level, now
            entry["opened"][str(level)] = now
            decided.append((key, OPENED, entry, f"{key}:{OPENED}:{level}:{window}"))
        elif announced is not None and now - entry["sent_at"] >= repeat_s:
            marker = f"{key}:{REPEAT}:{int(entry['sent_at'])}"
            entry["sent_at"] = now
            decided.append((key, REPEAT, entry, marker))
        changed[key] = entry
    for key, entry in state.items():
        if key in reading.holding or not entry["active"] or not reading.tells(key, entry["type"]):
            continue
        ended = {**entry, "active": False, "ended_at": now}
        if entry["announced_level"] is not None:
            decided.append((key, RESOLVED, ended, f"{key}:{RESOLVED}:{int(entry['since'])}"))
        changed[key] = ended
    gone = [
        key
        for key, entry in {**state, **changed}.items()
        if not entry["active"] and all(now - at >= repeat_s for at in entry["opened"].values())
    ]
    for key in gone:
        changed.pop(key, None)
    return decided, changed, gone


def _episode(alert_type: str, condition: Condition, now: float, before: dict[str, Any] | None) -> dict[str, Any]:
    """A new entry for a condition that starts; when each level was last opened is kept."""
    return {
        "type": alert_type,
        "subject": condition.subject,
        "active": True,
        "since": now,
        "announced_level": None,  # the highest level alerted this time; None: not alerted yet
        "sent_at": None,
        "opened": dict(before["opened"]) if before else {},  # level -> when its last `opened` went
    }


def _stored(condition: Condition) -> dict[str, Any]:
    return {"summary": condition.summary, "ended": condition.ended, "page": condition.page, "facts": condition.facts}


def _alert(runtime: Runtime, key: str, status: str, entry: dict[str, Any], now: datetime) -> Alert:
    condition = entry["condition"]
    resolved = status == RESOLVED
    facts = dict(condition["facts"])
    if resolved:
        facts["lasted_s"] = round(now.timestamp() - entry["since"])
    stamp = f"{key}:{status}:{entry['level']}:{entry['since']}:{entry['sent_at'] if not resolved else 'end'}"
    return Alert(
        id="alert_" + hashlib.sha256(stamp.encode()).hexdigest()[:24],
        type=entry["type"],
        status=status,
        subject=entry["subject"],
        summary=condition["ended"] if resolved else condition["summary"],
        at=_iso(now.timestamp()),
        since=_iso(entry["since"]),
        level=entry["level"],
        facts=facts,
        console_url=console_url(runtime.config, condition["page"]),
    )


def _first(client: redis.Redis, marker: str, repeat_s: float) -> bool:
    """Whether this process is the first to send the alert `marker` names."""
    return bool(client.set(SENT + marker, 1, nx=True, ex=int(2 * repeat_s) + 60))


def _load(client: redis.Redis) -> dict[str, dict[str, Any]]:
    stored = cast(dict[bytes, bytes], client.hgetall(STATE))  # redis-py types async results too
    return {key.decode(): json.loads(value) for key, value in stored.items()}


def _save(client: redis.Redis, changed: dict[str, dict[str, Any]], gone: list[str]) -> None:
    pipe = client.pipeline(transaction=True)
    if changed:
        pipe.hset(STATE, mapping={key: json.dumps(entry) for key, entry in changed.items()})
    if gone:
        pipe.hdel(STATE, *gone)
    pipe.execute()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def active_alerts(runtime: Runtime) -> list[dict[str, Any]]:
    """The conditions alerting now, as stored (for a look from the shell or a test)."""
    return [entry | {"key": key} for key, entry in _load(runtime.redis).items() if entry["active"]]


def evaluate_and_publish(runtime: Runtime, celery_app) -> list[Alert]:
    """One evaluation as beat has it run: the alerts decided, each published to every sink."""
    alerts = evaluate(runtime)
    if alerts:
        publish(celery_app, alerts, runtime.config.alert_sinks)
    return alerts


@shared_task(bind=True, name=EVALUATE_ALERTS_TASK)
def evaluate_alerts(self) -> int:
    """Beat's alert check. A task here, not in workers/tasks.py: it reads the operations' views,
    a layer above the engine's. The runtime is the one its Celery app was built with."""
    return len(evaluate_and_publish(self.app.runtime, self.app))
