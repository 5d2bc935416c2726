"""The Alerts drill (issue 19): a loopback Standard Webhooks receiver and a Slack stand-in
(testbed.alert_sinks) get the held, breaker, backlog-age and daily-budget alerts as a real
worker process decides and sends them, each opened once and resolved once. The suite
runs it small (tests/test_drill_alerts.py), bench/drills/alerts.py at full size.

Its phases, one condition after the other, each brought about as in production and ended once
both sinks have its `opened` alert:
- held: `relay destinations hold spruce` (operations.destinations.hold), then resume;
- breaker and backlog_age: the sandbox's Sprig answers 503 while webhooks come in, so Sprig's
  breaker opens and its deliveries wait longer than RELAY_ALERT_BACKLOG_AGE; then Sprig is back;
- daily_budget: the sandbox's other integration spends 82% of Spruce's day (capped there by a
  short minute window of 820 calls), and a few webhooks have Spruce state it: 80%; then Spruce's
  day turns over (its limits set again) and a webhook has it stated again.

The alert check: beat's, every relay.queue.ALERTS_INTERVAL (30 s, no setting), and, with
`check_every_s`, the same task (relay.alerts.evaluate) sent to the workers by the drill at that
pace, as beat sends it; the workers evaluate and send as in production."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from operations import destinations
from operations.audit import Actor
from relay.queue import CATCH_UP_QUEUE, EVALUATE_ALERTS_TASK, SWEEP_TASK
from relay.runtime import Runtime
from schemas.personal import personal_strings
from testbed.alert_sinks import WEBHOOK_SECRET, Posted, RecordingSink
from testbed.console import CONSOLE_KEY
from testbed.drills.processes import Drill
from testbed.drills.traffic import post_all, reward_event
from testbed.drills.verdicts import unsettled
from testbed.net import served
from testbed.waiting import wait_for
from workers.sweep import LAST_SWEPT

PUBLIC_URL = "https://relay.example.com"
HELD, BREAKER, BACKLOG_AGE, DAILY_BUDGET = "held", "breaker", "backlog_age", "daily_budget"
# Each alert the drill brings about: its type and subject, opened once, then resolved once. (On
# a loaded machine Spruce's deliveries may wait past the backlog age too, behind Sprig's: that
# alert is right, and goes by the same rule.)
EXPECTED = ((HELD, "spruce"), (BREAKER, "sprig"), (BACKLOG_AGE, "sprig"), (DAILY_BUDGET, "spruce"))
HELD_AT, SPRIG_DOWN_AT, BUDGET_AT = EXPECTED[:1], EXPECTED[1:3], EXPECTED[3:]
SPRIG_DOWN = {"vendor": "sprig", "status": 503, "times": None, "message": "down for maintenance"}
# Spruce's day: 1,000 calls, of which the other integration spends 820 (the minute window's
# limit, so no more however long it runs) in its first 0.82 s.
DAILY_LIMIT, OTHER_SPENDS, OTHER_EVERY_S, SHORT_MINUTE_S = 1000, 820, 0.001, 1.5
SPRUCE_DAY = {"limit": OTHER_SPENDS, "window_s": SHORT_MINUTE_S, "daily_limit": DAILY_LIMIT, "day_s": 3600}


@dataclass
class AlertsRun:
    """What the sinks were posted, the personal values of every webhook posted, and the times
    (time.monotonic()) each condition began and ended, by type."""

    webhook: list[Posted]
    slack: list[Posted]
    personal: set[str]
    began: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    took_s: float = 0.0

    def alerts(self) -> list[tuple[str, str, str]]:
        """(type, status, subject) of each alert the webhook sink was posted, in order."""
        return [
            (post.json["data"]["type"], post.json["data"]["status"], post.json["data"]["subject"])
            for post in self.webhook
        ]

    def statuses(self) -> dict[tuple[str, str], list[str]]:
        """Each (type, subject) alerted about: the statuses of its alerts, in order."""
        found: dict[tuple[str, str], list[str]] = {}
        for alert_type, status, subject in self.alerts():
            found.setdefault((alert_type, subject), []).append(status)
        return found

    def delay_s(self, alert_type: str, status: str) -> float | None:
        """Seconds from the condition's start (opened) or end (resolved) to its alert at the webhook sink."""
        since = (self.began if status == "opened" else self.ended).get(alert_type)
        arrived = [
            post.at
            for post in self.webhook
            if (post.json["data"]["type"], post.json["data"]["status"]) == (alert_type, status)
        ]
        return arrived[0] - since if arrived and since is not None else None


class AlertCheck:
    """Sends beat's alert task to the workers every `every_s` from a thread, as beat would."""

    def __init__(self, app, every_s: float):
        self._celery, self._every_s = app.extensions["celery"], every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="alert-check")

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self._celery.send_task(EVALUATE_ALERTS_TASK, queue=CATCH_UP_QUEUE, expires=self._every_s * 5)

    def __enter__(self) -> AlertCheck:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def alerts_drill(
    drill: Drill,
    sandbox,
    subscribers: int = 10,
    check_every_s: float | None = 1.0,
    backlog_age: str = "3s",
    cooldown: str = "2s",
    within_s: float = 60.0,
    settle_s: float = 2.0,
    beat: bool = True,
) -> AlertsRun:
    """The phases above with `subscribers` webhooks during Sprig's outage; each wait at most
    `within_s`; after the last, `settle_s` more for anything sent twice to arrive. `beat`:
    start beat too (a CI-sized drill ends before its first alert check)."""
    started = time.monotonic()
    webhook, slack = RecordingSink(), RecordingSink()
    with served(webhook) as webhook_url, served(slack) as slack_url:
        app = drill.app(
            RELAY_ALERT_WEBHOOK_URL=webhook_url,
            RELAY_ALERT_WEBHOOK_SECRET=WEBHOOK_SECRET,
            RELAY_ALERT_SLACK_URL=slack_url,
            RELAY_PUBLIC_URL=PUBLIC_URL,
            RELAY_CONSOLE_SECRET_KEY=CONSOLE_KEY,
            RELAY_ALERT_BACKLOG_AGE=backlog_age,
            RELAY_BREAKER_COOLDOWN=cooldown,
        )
        runtime = Runtime.of(app)
        watched = [drill.start_worker("worker", supervised=True, as_procfile=True)]
        if beat:
            watched.append(drill.start_beat())
        # A sweep first, sent as beat sends it, rather than waiting for beat's first (10 s after
        # it starts, if it runs): until a sweep is done the sweep alert would rightly go out.
        app.extensions["celery"].send_task(SWEEP_TASK)
        assert wait_for(lambda: runtime.redis.exists(LAST_SWEPT), timeout=within_s, interval=0.2), drill.logs()
        run = AlertsRun(webhook.posted, slack.posted, set())
        phase = _Phases(run, slack, within_s, drill)
        actor = Actor.cli("drill")
        with AlertCheck(app, check_every_s) if check_every_s else nullcontext():
            with phase.begin(*HELD_AT):
                destinations.hold(runtime, "spruce", reason="drill", actor=actor)
            with phase.end(*HELD_AT):
                destinations.resume(runtime, "spruce", actor=actor)

            outage = [reward_event("reward_unlocked", n) for n in range(subscribers)]
            with phase.begin(*SPRIG_DOWN_AT):
                sandbox.configure(faults=[SPRIG_DOWN])
                post_all(app, outage)
            with phase.end(*SPRIG_DOWN_AT):
                sandbox.configure(faults=[])
            assert wait_for(lambda: unsettled(app) == 0, timeout=within_s, interval=0.2), drill.logs()

            spent = [reward_event("reward_unlocked", n) for n in range(subscribers, subscribers + 2)]
            with phase.begin(*BUDGET_AT):
                _other_integration_spends(sandbox)
                post_all(app, spent)
            turned = [reward_event("reward_unlocked", subscribers + 2)]
            with phase.end(*BUDGET_AT):
                sandbox.configure(rate_limit={"spruce": SPRUCE_DAY})  # the next day
                post_all(app, turned)
            phase.all_resolved()
            time.sleep(settle_s)
        dead = [process.args for process in watched if process.poll() is not None]
        assert not dead, f"processes died: {dead}\n{drill.logs()}"
    run.personal = set().union(*(personal_strings(payload) for payload in [*outage, *spent, *turned]))
    run.took_s = time.monotonic() - started
    return run


def _other_integration_spends(sandbox) -> None:
    """Spruce's day set, and 82% of it spent by the other integration in the first minute window
    (capped there); it stops before the next window, which Relay's calls will find empty."""
    set_at = time.monotonic()
    sandbox.configure(rate_limit={"spruce": {**SPRUCE_DAY, "other_integration_every_s": OTHER_EVERY_S}})
    time.sleep(max(set_at + OTHER_SPENDS * OTHER_EVERY_S + 0.3 - time.monotonic(), 0))
    sandbox.configure(rate_limit={"spruce": {"other_integration_every_s": None}})
    time.sleep(max(set_at + SHORT_MINUTE_S + 0.3 - time.monotonic(), 0))


class _Phases:
    """`with phase.begin((type, subject)…)`: the block brings the conditions about, then waits
    until both sinks have each one's opened alert; `with phase.end(…)`: it ends them, then waits
    for the resolved ones. The times they began and ended go into the run, by type."""

    def __init__(self, run: AlertsRun, slack: RecordingSink, within_s: float, drill: Drill):
        self.run, self.slack, self.within_s, self.drill = run, slack, within_s, drill

    @contextmanager
    def begin(self, *keys: tuple[str, str]) -> Iterator[None]:
        self.run.began.update({alert_type: time.monotonic() for alert_type, _ in keys})
        yield
        self._until(keys, "opened")

    @contextmanager
    def end(self, *keys: tuple[str, str]) -> Iterator[None]:
        self.run.ended.update({alert_type: time.monotonic() for alert_type, _ in keys})
        yield
        self._until(keys, "resolved")

    def all_resolved(self) -> None:
        """Until every alert opened is resolved too."""
        self._until(tuple(self.run.statuses()), "resolved")

    def _until(self, keys: tuple[tuple[str, str], ...], status: str) -> None:
        def arrived() -> bool:
            statuses = self.run.statuses()
            slack_too = len(self.slack.taken) >= len(self.run.webhook)
            return slack_too and all(status in statuses.get(key, []) for key in keys)

        assert wait_for(arrived, timeout=self.within_s, interval=0.1), (
            f"no {status} alert of {keys}: {self.run.alerts()}\n{self.drill.logs()}"
        )
