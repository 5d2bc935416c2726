"""The Hold drill (issue 19): Spruce is held while webhooks come in; Sprig gets every one, Spruce
none, and each waits as held; every process restarts (workers, beat, the web app); the hold
stands; `relay destinations resume spruce`: each reaches Spruce once, in the order it arrived
for its subscriber. The suite runs it small (tests/test_drill_hold.py), bench/drills/hold.py at
full size.

The webhooks are reward_unlocked events, `events_each` for each of `subscribers` subscribers,
posted in turns (one for each subscriber, then the next round), the k-th of a subscriber after
k referrals: each is a note at Spruce whose text says its count, so the order of a subscriber's
notes in its note conversation is the order Spruce received them in."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from testbed.apps import deliveries, sandbox_state
from testbed.cli import invoke
from testbed.drills.processes import Drill
from testbed.drills.traffic import post_all, reward_event
from testbed.drills.verdicts import unsettled
from testbed.waiting import wait_for

# The note's first line (workers.spruce.note_template's default): "… (after 3 referrals). …"
AFTER = re.compile(r"\(after (\d+) referrals?\)")


def held_rewards(subscribers: int, events_each: int) -> list[dict]:
    payloads = []
    for count in range(1, events_each + 1):
        for n in range(subscribers):
            payload = reward_event("reward_unlocked", n)
            payload["referrals"] = payload["subscriber"]["tot_referrals"] = count
            payloads.append(payload)
    return payloads


@dataclass
class HoldDrill:
    """What the drill saw. Before the resume: Sprig's deliveries done (`sprig_done`), Spruce's held
    (`held_shown`: `relay events list` says held), Spruce's calls (before and after the restart)
    and attempts; after it: Spruce's deliveries done, each note key posted (`notes_posted`, by
    key), the notes per subscriber by referral count in the order Spruce holds them, and how long
    the backlog took (`drained_s`, from the resume)."""

    webhooks: int
    sprig_done: int = 0
    held_shown: int = 0
    spruce_calls_held: int = 0
    spruce_calls_after_restart: int = 0
    spruce_attempts_held: int = 0
    hold_after_restart: bool = False
    resume_output: str = ""
    spruce_done: int = 0
    drained_s: float | None = None
    notes_posted: Counter = field(default_factory=Counter)
    notes_in_order: dict[str, list[int]] = field(default_factory=dict)
    dead: list[str] = field(default_factory=list)

    @property
    def out_of_order(self) -> list[str]:
        """Subscribers whose notes Spruce holds in another order than they arrived in."""
        return [who for who, counts in self.notes_in_order.items() if counts != sorted(counts)]

    @property
    def twice(self) -> list[str]:
        """Note keys (relay-note-<delivery id>) posted and accepted more than once."""
        return [key for key, n in self.notes_posted.items() if n > 1]

    def line(self) -> str:
        return (
            f"drill hold: {self.webhooks} webhooks; while held Sprig done {self.sprig_done}, shown held "
            f"{self.held_shown}, Spruce calls {self.spruce_calls_held} (after the restart "
            f"{self.spruce_calls_after_restart}), attempts {self.spruce_attempts_held}; hold after the restart "
            f"{'kept' if self.hold_after_restart else 'LOST'}; resumed: Spruce done {self.spruce_done} in "
            f"{'-' if self.drained_s is None else f'{self.drained_s:.1f} s'}, notes twice {len(self.twice)}, "
            f"subscribers out of order {len(self.out_of_order)}; dead processes {self.dead or 'none'}"
        )


def _start(drill: Drill, generation: int, workers: int, as_procfile: bool) -> dict:
    """`workers` workers (logging at INFO, for their "ready" line): one-process ones, or as the
    Procfile runs them (`relay worker`, two pool processes each); and beat."""
    started = {
        f"worker{generation}.{n}": drill.start_worker(
            f"worker{generation}.{n}", supervised=as_procfile, as_procfile=as_procfile, loglevel="INFO"
        )
        for n in range(workers)
    }
    return {**started, f"beat{generation}": drill.start_beat(f"beat{generation}")}


def _ready(drill: Drill, names: list[str]) -> bool:
    logs = [drill.log_dir / f"{name}.log" for name in names]
    return all(path.exists() and " ready." in path.read_text(errors="replace") for path in logs)


def _spruce_calls(sandbox) -> int:
    return sum(sandbox.stats().get("spruce", {}).values())


def hold_drill(
    drill: Drill,
    sandbox,
    subscribers: int = 10,
    events_each: int = 5,
    workers: int = 2,
    as_procfile: bool = False,
    within_s: float = 60.0,
    **env: str,
) -> HoldDrill:
    """`within_s`: for Sprig's deliveries, the workers' start and the backlog's drain each;
    `env`: Relay's settings changed (SPRUCE_RATE_LIMIT)."""
    app = drill.app(**env)
    payloads = held_rewards(subscribers, events_each)
    seen = HoldDrill(len(payloads))
    held = invoke(app, "destinations", "hold", "spruce", "--reason", "drill: Spruce under repair")
    assert held.exit_code == 0, held.output
    running = _start(drill, 1, workers, as_procfile)
    post_all(app, payloads)

    def sprig_done() -> int:
        return sum(d.status == "succeeded" for d in deliveries(app) if d.destination == "sprig")

    wait_for(lambda: sprig_done() == len(payloads), timeout=within_s, interval=0.2)
    seen.sprig_done = sprig_done()
    listed = json.loads(invoke(app, "events", "list", "--limit", str(len(payloads)), "--json").output)
    seen.held_shown = sum(1 for e in listed for d in e["deliveries"] if d["destination"] == "spruce" and d["held"])
    seen.spruce_calls_held = _spruce_calls(sandbox)

    # Every process restarts: the web app (this process's), the workers and beat.
    seen.dead = [name for name, process in running.items() if process.poll() is not None]
    drill.stop()
    app = drill.app()
    running = _start(drill, 2, workers, as_procfile)
    workers_up = wait_for(lambda: _ready(drill, [n for n in running if n.startswith("worker")]), timeout=within_s)
    assert workers_up, drill.logs()
    time.sleep(1.0)  # a few rounds of the new dispatchers
    status = json.loads(invoke(app, "destinations", "status", "--json").output)
    seen.hold_after_restart = any(d["name"] == "spruce" and d["held"] for d in status)
    seen.spruce_calls_after_restart = _spruce_calls(sandbox)
    seen.spruce_attempts_held = sum(d.attempts for d in deliveries(app) if d.destination == "spruce")

    resumed_at = time.monotonic()
    seen.resume_output = invoke(app, "destinations", "resume", "spruce", "--yes").output
    if wait_for(lambda: unsettled(app) == 0, timeout=within_s, interval=0.2):
        seen.drained_s = time.monotonic() - resumed_at
    seen.spruce_done = sum(d.status == "succeeded" for d in deliveries(app) if d.destination == "spruce")
    seen.dead += [name for name, process in running.items() if process.poll() is not None]
    state = sandbox_state(sandbox)
    accepted = [r for r in state["requests"] if r["vendor"] == "spruce" and 200 <= r["status"] < 300]
    seen.notes_posted = Counter(
        r["idempotency_key"] for r in accepted if (r["idempotency_key"] or "").startswith("relay-note-")
    )
    seen.notes_in_order = _notes_in_order(sandbox)
    return seen


def _notes_in_order(sandbox) -> dict[str, list[int]]:
    """Each subscriber's notes at Spruce, in the order its note conversation holds them, as the
    referral counts they state."""
    spruce = sandbox.snapshot()["spruce"]
    email_of = {c["id"]: c["emailAddresses"][0]["value"] for c in spruce["contacts"] if c["emailAddresses"]}
    found = {}
    for conversation in spruce["conversations"]:
        whose = ",".join(sorted(email_of.get(i, i) for i in conversation["associatedContactIds"]))
        notes = [item for item in spruce["items"].get(conversation["id"], []) if item["isInternalNote"]]
        found[whose] = [int(m.group(1)) for item in notes if (m := AFTER.search(item["text"]))]
    return found
