"""Fault drills with real processes: supervised workers (`relay worker`), beat, a stream of
webhooks, and the faults of Relay's own infrastructure (workers killed, Redis restarted empty,
PostgreSQL restarted, a rolling deploy) and of its vendors (one down for a while, 429 storms with
Retry-After, one slower than the client timeout), and SparkLoop sending every webhook three
times. Each scenario returns what it measured, with one tally (`Tally`: accepted, done, failed,
lost, duplicate effects at the vendors, 429s); the suite runs them small (tests/test_drill_*.py)
and bench/drills/ at the size of the incidents they stand for.

The web side is the Flask test client in this process, posting from a thread; the workers and
beat are processes of their own, so whatever they must agree on goes through PostgreSQL and
Redis. Every process started here is ended here, by its pid.
"""
from __future__ import annotations

import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx
import sqlalchemy as sa

from relay.models import DeliveryStatus, Event, EventStatus
from schemas.events import dedup_key, validate_event
from testbed.apps import TERMINAL, TOKEN, deliveries, events, post_event, sandbox_state
from testbed.examples import load_fixture
from testbed.net import free_port
from testbed.waiting import wait_for
from web import create_app

REPO = Path(__file__).resolve().parent.parent
HEAL_WITHIN_S = 60.0
STOP_WITHIN_S = 8.0
PROCFILE = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line.strip())


# --- processes ------------------------------------------------------------------------------


class Drill:
    """One drill's Relay configuration, its web app (in this process) and its processes."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.processes: list[subprocess.Popen] = []
        self._app = None

    def app(self, **overrides: str):
        """The web side; processes started afterwards get the same configuration."""
        self.env = {**self.env, **overrides}
        self._app = create_app(self.env)
        return self._app

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **self.env},
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start_worker(self, name: str, supervised: bool = False, as_procfile: bool = False,
                     loglevel: str = "WARNING") -> subprocess.Popen:
        """A one-process worker (solo pool: a task runs in the main process, so a SIGKILL lands
        mid-delivery), or `as_procfile`: Celery's defaults, two pool processes. `supervised`:
        under `relay worker`, as the Procfile runs it."""
        options = ["--loglevel", loglevel, "-n", f"{name}@%h"]
        options += ["--concurrency", "2"] if as_procfile else [
            "--pool", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        runner = ["-m", "web.cli", "worker"] if supervised else ["-m", "celery", "-A", "workers", "worker"]
        return self.start(name, [sys.executable, *runner, *options])

    def start_beat(self, name: str = "beat", as_procfile: bool = False) -> subprocess.Popen:
        """Beat with a file schedule, or `as_procfile`: as the Procfile's line runs it."""
        if as_procfile:
            command = PROCFILE["beat"].split()
            return self.start(name, [sys.executable, "-m", *command])
        return self.start(name, [sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", "WARNING",
                                 "--schedule", str(self.log_dir / f"{name}-schedule")])

    def start_web(self, name: str, port: int) -> subprocess.Popen:
        """gunicorn as the Procfile runs it (gunicorn.conf.py), bound to loopback only."""
        process = self.start(name, [sys.executable, "-m", "gunicorn", "web:create_app()", "-c", "gunicorn.conf.py",
                                    "--bind", f"127.0.0.1:{port}"])
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout=30), self.logs()
        return process

    @staticmethod
    def worker_of(supervisor: subprocess.Popen) -> int | None:
        """The pid of the Celery worker a `relay worker` runs now."""
        try:
            children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL to the process and its children: a machine gone."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM to every process, then SIGKILL to whatever still runs after STOP_WITHIN_S in
        all (a worker waiting out its shutdown grace in a slow vendor call): the drill's
        verdict is in by now, and graceful stops are what test_drill_restart.py checks."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_WITHIN_S
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._app is not None:
            self._app.extensions["relay.db"].dispose()


class RedisServer:
    """A redis-server of the drill's own on a free loopback port, keeping nothing on disk, so
    that it can be restarted empty without touching the machine's."""

    def __init__(self, log_dir: Path):
        self.port, self.log_dir, self.process = free_port(), log_dir, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.log_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(self._answers, timeout=10), "redis-server did not start"

    def crash(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.crash()


class TcpProxy:
    """A loopback TCP proxy in front of the machine's PostgreSQL. `outage(s)` does to Relay's
    connections what a database restart does: every open one is cut, and new ones are refused
    for `s` seconds."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self._down_until, self._links, self._lock = 0.0, [], threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="pg-proxy")
        self._thread.start()

    def url_for(self, database_url: str) -> str:
        return database_url.replace(f":{self.target_port}/", f":{self.port}/")

    def outage(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds
            links, self._links = self._links, []
        for pair in links:
            for sock in pair:
                sock.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            if time.monotonic() < self._down_until:
                client.close()  # refused, as a server that is not up
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._links.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        try:
            while not self._stopping.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # cut by an outage
            pass
        finally:
            client.close()
            server.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        self._thread.join(timeout=5)
        self.outage(0)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- traffic and verdicts -------------------------------------------------------------------


def reward_event(event_type: str, n: int) -> dict:
    """The fixture's reward event for subscriber number `n`: another person, so another event."""
    payload = load_fixture(event_type)
    payload["subscriber"].update(
        id=f"sub_drill{n}", email=f"drill{n}@example.com", referral_code=f"drill{n:04d}",
        referral_link=f"https://mywebsite.com?rh_ref=drill{n:04d}",
    )
    return payload


def post_all(app, payloads: list[dict]) -> None:
    client = app.test_client()
    for payload in payloads:
        assert post_event(client, payload).status_code == 200


def through_app(app) -> Callable[[dict], int | None]:
    """Post to the web app in this process (Flask's test client)."""
    client = app.test_client()
    return lambda payload: post_event(client, payload).status_code


def over_http(url: Callable[[], str]) -> Callable[[dict], int | None]:
    """Post over HTTP to whichever web `url()` names now (the router's choice); None when the
    connection fails."""
    http = httpx.Client(timeout=10)

    def post(payload: dict) -> int | None:
        try:
            return http.post(f"{url()}/webhooks/sparkloop", json=payload, headers={"SparkLoop-Token": TOKEN}).status_code
        except httpx.TransportError:
            return None

    return post


@dataclass
class Stream:
    """Webhooks posted from a thread, `per_second` distinct ones a second; a failed post (a 5xx:
    the store down; no answer: the web restarting) is posted again after half a second, as
    SparkLoop retries. With `copies` > 1 SparkLoop sends every webhook that many times: every
    `at_once`-th one with all its copies at the same moment (each from a thread of its own), the
    others once now and again `later_s` seconds later each (by then the first copy's deliveries
    may be under way, or done)."""
    post: Callable[[dict], int | None]
    payloads: list[dict]
    per_second: float
    copies: int = 1
    at_once: int = 2
    later_s: tuple[float, ...] = (1.0, 5.0)
    answers: list[int] = field(default_factory=list)  # every answer, retried ones too
    accepted: list[dict] = field(default_factory=list)  # a webhook for every 200 it got
    retried: int = 0

    def __post_init__(self):
        assert len(self.later_s) >= self.copies - 1, "a delay for every copy posted later"
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._post_all, daemon=True, name="webhooks")
        self.thread.start()

    def _post_all(self) -> None:
        later: list[tuple[float, int, dict]] = []  # (when, order, payload): copies posted later
        for n, payload in enumerate(self.payloads):
            started = time.monotonic()
            later = self._post_due(later, started)
            if self.copies > 1 and n % self.at_once == 0:
                self._post_at_once(payload)
            else:
                self._post_one(payload)
                later += [(started + delay, n, payload) for delay in self.later_s[:self.copies - 1]]
            time.sleep(max(0.0, 1 / self.per_second - (time.monotonic() - started)))
        while later:
            time.sleep(max(0.0, min(later)[0] - time.monotonic()))
            later = self._post_due(later, time.monotonic())

    def _post_due(self, later: list[tuple[float, int, dict]], now: float) -> list[tuple[float, int, dict]]:
        for _, _, payload in sorted(entry for entry in later if entry[0] <= now):
            self._post_one(payload)
        return [entry for entry in later if entry[0] > now]

    def _post_at_once(self, payload: dict) -> None:
        start = threading.Barrier(self.copies)

        def post() -> None:
            start.wait(timeout=10)
            self._post_one(payload)

        threads = [threading.Thread(target=post, daemon=True) for _ in range(self.copies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=150)

    def _post_one(self, payload: dict) -> None:
        for _ in range(240):  # SparkLoop's retries, bounded
            status = self.post(payload)
            with self._lock:
                if status is not None:
                    self.answers.append(status)
                    if status == 200:
                        self.accepted.append(payload)
                    if status < 500:
                        return
                self.retried += 1
            time.sleep(0.5)

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the webhook stream did not finish"


def all_events_done(app) -> bool:
    try:
        return all(e.status == "done" for e in events(app))
    except Exception:  # the store itself may be the fault
        return False


def unsettled(app) -> int | None:
    """How many stored events are not in a terminal state yet; None while the store is away."""
    try:
        with app.extensions["relay.db"].session() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(Event).where(Event.status.not_in(TERMINAL)))
    except Exception:  # the store itself may be the fault
        return None


def in_flight(app) -> list[int]:
    return [d.id for d in deliveries(app) if d.status == DeliveryStatus.IN_FLIGHT]


def vendor_requests(sandbox, vendor: str) -> list[dict]:
    return [r for r in sandbox_state(sandbox)["requests"] if r["vendor"] == vendor]


def duplicate_effects(sandbox, subscribers: int) -> list[str]:
    """Everything the vendors hold twice, for `subscribers` reward_redeemed subscribers: contacts,
    note conversations, notes, Sprig event occurrences."""
    state = sandbox_state(sandbox)
    spruce, problems = state["spruce"], []
    emails = sorted(c["emailAddresses"][0]["value"] for c in spruce["contacts"])
    if emails != sorted(f"drill{n}@example.com" for n in range(subscribers)):
        problems.append(f"{len(emails)} Spruce contacts for {subscribers} subscribers")
    if len(spruce["conversations"]) != subscribers:
        problems.append(f"{len(spruce['conversations'])} note conversations for {subscribers} subscribers")
    notes = [len([i for i in spruce["items"].get(c["id"], []) if i["isInternalNote"]]) for c in spruce["conversations"]]
    if any(n != 1 for n in notes):
        problems.append(f"note conversations holding {sorted(set(notes))} notes")
    counts = [e["count"] for user in state["sprig"]["users"].values() for e in user["events"]]
    if len(counts) != subscribers or any(c != 1 for c in counts):
        problems.append(f"Sprig event counts {sorted(counts)[-5:]} for {subscribers} subscribers")
    return problems


# --- the tally every drill ends with --------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """`accepted`: distinct webhooks answered 200; of those, `done` and `failed` (their event's
    terminal state) and `lost`: neither (never stored, or not finished when the drill ended);
    `duplicates`: effects a vendor holds more often than once (`excess_effects`); `throttled`:
    vendor answers with status 429 (the sandbox's request counts: unlike its request log, they
    are not cut at 10,000 entries)."""
    accepted: int
    done: int
    failed: int
    lost: int
    duplicates: int
    throttled: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0

    def line(self, name: str) -> str:
        return (f"drill {name}: accepted {self.accepted}, done {self.done}, failed {self.failed}, "
                f"lost {self.lost}, duplicates {self.duplicates}, 429s {self.throttled}")


def assert_all_done(healed, accepted: int) -> None:
    """A drill's verdict: every accepted webhook done, none lost or failed, nothing twice."""
    tally = healed.tally
    assert (tally.lost, tally.duplicates) == (0, 0), healed
    assert (tally.accepted, tally.done, tally.failed) == (accepted, accepted, 0), healed
    assert healed.events == accepted and healed.healed_s is not None, healed


def webhook_key(payload: dict) -> str:
    """The key Relay stores the webhook's event under (its natural identity)."""
    event_type, data, errors = validate_event(payload)
    assert data is not None, f"the drills post valid events of handled types ({event_type}: {errors})"
    return dedup_key(event_type, data)


def tally(app, sandbox, accepted: list[dict]) -> Tally:
    """The drill's figures, from the store, the sandbox's state and its request counts."""
    keys = {webhook_key(payload) for payload in accepted}
    with app.extensions["relay.db"].session() as session:
        stored = dict(session.execute(sa.select(Event.dedup_key, Event.status)).all())
    states = Counter(stored.get(key) for key in keys)
    done, failed = states[EventStatus.DONE], states[EventStatus.FAILED]
    throttled = sum(counts.get("429", 0) for counts in sandbox.stats().values())
    return Tally(len(keys), done, failed, len(keys) - done - failed, excess_effects(sandbox.snapshot()), throttled)


def vendor_effects(state: dict) -> dict[str, Counter]:
    """What the vendors hold, counted by subscriber (their email): Spruce contacts, note
    conversations and the internal notes in them; Sprig event occurrences by user and name."""
    spruce = state["spruce"]
    email_of = {c["id"]: c["emailAddresses"][0]["value"] if c["emailAddresses"] else c["id"]
                for c in spruce["contacts"]}
    effects = {kind: Counter() for kind in ("contacts", "conversations", "notes", "sprig events")}
    effects["contacts"].update(email_of.values())
    for conversation in spruce["conversations"]:
        whose = ",".join(sorted(email_of.get(i, i) for i in conversation["associatedContactIds"]))
        effects["conversations"][whose] += 1
        effects["notes"][whose] += sum(1 for item in spruce["items"].get(conversation["id"], [])
                                       if item["isInternalNote"])
    for user_id, user in state["sprig"]["users"].items():
        for event in user["events"]:
            effects["sprig events"][(user_id, event["event"])] += event["count"]
    return effects


def excess_effects(state: dict) -> int:
    """Effects held more often than once: the drills send one event per subscriber, so each
    subscriber has one contact, one note conversation holding one note, and one occurrence of
    its Sprig event."""
    return sum(n - 1 for counts in vendor_effects(state).values() for n in counts.values() if n > 1)


@dataclass
class Healed:
    """What a drill measured: how long after the fault's end every event was done; `retried`:
    webhooks posted again (no answer, or a 5xx); `lease_waits`: deliveries that waited for a
    dead worker's lease to run out instead of being handed back; `failed_attempts`: runs that
    ended in an error (not deferred: a timeout, a 5xx, a killed worker); `deferrals`: runs that
    waited (the throttle, a 429, the breaker, a busy subscriber); `vendor_answers`: the
    sandbox's answers by vendor and status; `tally`: the drill's figures."""
    events: int
    healed_s: float | None
    answers: dict[int, int]
    duplicates: list[str]
    dead: list[str]
    retried: int = 0
    lease_waits: int = 0
    tally: Tally | None = None
    failed_attempts: int = 0
    deferrals: int = 0
    vendor_answers: dict[str, dict[str, int]] = field(default_factory=dict)


def verdict(drill: Drill, app, sandbox, stream: Stream, fault_ended: float, subscribers: int,
            watched: dict[str, subprocess.Popen], within_s: float = HEAL_WITHIN_S) -> Healed:
    """Waits for the stream to end and every event to settle, at most `within_s` after the
    fault's end (the stream at least 30 s), then measures."""
    deadline = fault_ended + within_s
    stream.wait(timeout=max(30.0, deadline - time.monotonic()))
    settled = wait_for(lambda: unsettled(app) == 0, timeout=max(0.0, deadline - time.monotonic()), interval=0.5)
    settled_s = time.monotonic() - fault_ended
    figures = tally(app, sandbox, stream.accepted)
    stored = len(events(app))
    healed_s = settled_s if settled and figures.done == figures.accepted == stored else None
    answers = {status: stream.answers.count(status) for status in sorted(set(stream.answers))}
    runs = deliveries(app)
    lease_waits = sum("lease expired" in (d.last_error or "") for d in runs)
    finished = (DeliveryStatus.SUCCEEDED, DeliveryStatus.SUPERSEDED)  # the last run did not fail
    failed_attempts = sum(d.attempts - d.deferrals - (d.status in finished) for d in runs)
    return Healed(stored, healed_s, answers, duplicate_effects(sandbox, subscribers),
                  [name for name, process in watched.items() if process.poll() is not None],
                  stream.retried, lease_waits, figures, failed_attempts, sum(d.deferrals for d in runs),
                  sandbox.stats())


# --- the scenarios --------------------------------------------------------------------------


def _redeemed(subscribers: int) -> list[dict]:
    return [reward_event("reward_redeemed", n) for n in range(subscribers)]


def _delivering(drill: Drill, workers: int = 2) -> dict[str, subprocess.Popen]:
    """`workers` supervised workers as the Procfile runs them, and beat."""
    started = {f"worker{n}": drill.start_worker(f"worker{n}", supervised=True, as_procfile=True)
               for n in range(workers)}
    return {**started, "beat": drill.start_beat()}


def _first_done(drill: Drill, app, timeout: float = 60.0) -> None:
    """Until the workers have finished an event: a fault timed from the stream's start would
    otherwise hit workers still starting, on a loaded machine."""
    def one_done() -> bool:
        with app.extensions["relay.db"].session() as session:
            return session.scalar(sa.select(Event.id).where(Event.status == EventStatus.DONE).limit(1)) is not None

    assert wait_for(one_done, timeout=timeout, interval=0.2), drill.logs()


def killed_workers(drill: Drill, sandbox, subscribers: int, kill_every_s: float, kills: int | None,
                   seed: int = 7, per_second: float = 10, latency_ms: int = 100, workers: int = 3,
                   kill_after_s: float = 60.0, within_s: float = HEAL_WITHIN_S) -> Healed:
    """`workers` supervised workers; every few seconds one of them dies: its Celery process is
    killed (OOM; `relay worker` starts it again), or the whole machine goes (a new one is
    started). Spruce answers slowly, so kills land mid-call. `kills`: how many; None: for as
    long as the run lasts (webhooks keep coming, or an event is unfinished), at most
    `kill_after_s` after the last webhook."""
    chance = random.Random(seed)
    sandbox.configure(latency_ms={"spruce": latency_ms})
    app = drill.app()
    running = {f"worker{n}": drill.start_worker(f"worker{n}", supervised=True) for n in range(workers)}
    beat = drill.start_beat()
    stream = Stream(through_app(app), _redeemed(subscribers), per_second=per_second)
    kill, posted = 0, None
    while kill < (kills if kills is not None else float("inf")):
        if kills is None and not stream.thread.is_alive():
            posted = posted or time.monotonic()
            if unsettled(app) == 0 or time.monotonic() - posted > kill_after_s:
                break
        time.sleep(kill_every_s)
        name = chance.choice(sorted(running))
        child = Drill.worker_of(running[name])
        if kill % 2 == 0 and child:
            os.kill(child, signal.SIGKILL)  # the worker process only: its supervisor restarts it
        else:
            drill.kill(running.pop(name))  # the machine: gone with everything on it
            running[f"worker{len(drill.processes)}"] = drill.start_worker(f"worker{len(drill.processes)}",
                                                                         supervised=True)
        kill += 1
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, {**running, "beat": beat}, within_s)


def redis_restarted_empty(drill: Drill, sandbox, redis_server: RedisServer, subscribers: int,
                          down_s: float, after_s: float = 4.0, per_second: float = 10,
                          within_s: float = HEAL_WITHIN_S) -> Healed:
    """Webhooks at `per_second`; Redis dies after `after_s` and comes back `down_s` later with
    nothing. The vendors' limits are low enough that deliveries wait for throttle slots: workers
    hold messages with a countdown, as in production, when Redis goes."""
    app = drill.app(REDIS_URL=redis_server.url, SPRIG_RATE_LIMIT="8/1s", SPRUCE_RATE_LIMIT="40/1s")
    watched = _delivering(drill)
    stream = Stream(through_app(app), _redeemed(subscribers), per_second=per_second)
    time.sleep(after_s)
    redis_server.crash()
    time.sleep(down_s)
    redis_server.start()
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, watched, within_s)


def postgres_restarted(drill: Drill, sandbox, proxy: TcpProxy, subscribers: int, down_s: float,
                       after_s: float = 4.0, per_second: float = 10, within_s: float = HEAL_WITHIN_S) -> Healed:
    """Webhooks at `per_second`; PostgreSQL goes away after `after_s` for `down_s` (its
    connections cut, new ones refused), for the web, the workers and beat alike."""
    sandbox.configure(latency_ms={"spruce": 50})
    app = drill.app(DATABASE_URL=proxy.url_for(drill.env["DATABASE_URL"]))
    workers = {f"worker{n}": drill.start_worker(f"worker{n}", supervised=True) for n in range(2)}
    beat = drill.start_beat()
    stream = Stream(through_app(app), _redeemed(subscribers), per_second=per_second)
    time.sleep(after_s)
    proxy.outage(down_s)
    time.sleep(down_s)
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, {**workers, "beat": beat}, within_s)


def vendor_down(drill: Drill, sandbox, subscribers: int, down_s: float, after_s: float = 3.0,
                vendor: str = "spruce", per_second: float = 10, workers: int = 2,
                within_s: float = HEAL_WITHIN_S, **env: str) -> Healed:
    """Webhooks at `per_second`; `after_s` after the first event is done, the vendor answers
    every request 503 without Retry-After (down, not throttling) for `down_s`. Its deliveries
    are retried with backoff and its breaker opens; the other vendor's go on. `env`: Relay's
    settings changed."""
    app = drill.app(**env)
    watched = _delivering(drill, workers)
    stream = Stream(through_app(app), _redeemed(subscribers), per_second=per_second)
    _first_done(drill, app)
    time.sleep(after_s)
    sandbox.configure(faults=[{"vendor": vendor, "status": 503, "times": None, "message": "down for maintenance"}])
    time.sleep(down_s)
    sandbox.configure(faults=[])
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, watched, within_s)


def rate_limit_storm(drill: Drill, sandbox, subscribers: int, storms: int, storm_s: float, every_s: float,
                     retry_after_s: int = 2, per_second: float = 10, workers: int = 2,
                     within_s: float = HEAL_WITHIN_S, **env: str) -> Healed:
    """Webhooks at `per_second`; once the first event is done, every `every_s`, for `storm_s`,
    both vendors answer every request 429 with `Retry-After: retry_after_s`, whatever Relay's
    own pace. A 429 defers the delivery (no attempt spent) and pushes every worker's next slot
    for the vendor."""
    app = drill.app(**env)
    watched = _delivering(drill, workers)
    stream = Stream(through_app(app), _redeemed(subscribers), per_second=per_second)
    _first_done(drill, app)
    for _ in range(storms):
        time.sleep(every_s - storm_s)
        sandbox.configure(faults=[{"vendor": vendor, "status": 429, "times": None, "retry_after": retry_after_s}
                                  for vendor in ("sprig", "spruce")])
        time.sleep(storm_s)
        sandbox.configure(faults=[])
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, watched, within_s)


def slow_vendor(drill: Drill, sandbox, subscribers: int, slow_s: float, after_s: float = 3.0,
                timeout_s: int = 1, latency_ms: int | None = None, vendors: tuple[str, ...] = ("sprig", "spruce"),
                per_second: float = 10, workers: int = 2, flap_s: float | None = None,
                within_s: float = HEAL_WITHIN_S, **env: str) -> Healed:
    """Webhooks at `per_second`; `after_s` after the first event is done, for `slow_s`,
    `vendors` take `latency_ms` (default half again Relay's `timeout_s`) before handling each
    request: Relay's client gives up first, and the request lands at the vendor afterwards,
    unanswered. The retries must find what landed (Spruce's idempotency keys, Sprig's
    read-back) instead of doing it again. `flap_s`: slow and fast by turns, that long each
    (so the breaker need not open, and retries meet a fast vendor while a slow request of
    theirs is still on its way)."""
    latency_ms = latency_ms if latency_ms is not None else int(timeout_s * 1500)
    app = drill.app(RELAY_VENDOR_TIMEOUT_S=str(timeout_s), **env)
    watched = _delivering(drill, workers)
    stream = Stream(through_app(app), _redeemed(subscribers), per_second=per_second)
    _first_done(drill, app)
    time.sleep(after_s)
    ends = time.monotonic() + slow_s
    while time.monotonic() < ends:
        sandbox.configure(latency_ms={vendor: latency_ms for vendor in vendors})
        time.sleep(max(0.0, min(flap_s or slow_s, ends - time.monotonic())))
        sandbox.configure(latency_ms={vendor: 0 for vendor in vendors})
        time.sleep(max(0.0, min(flap_s or 0.0, ends - time.monotonic())))
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, watched, within_s)


def duplicate_storm(drill: Drill, sandbox, subscribers: int, copies: int = 3, at_once: int = 2,
                    per_second: float = 10, web_concurrency: int = 2, workers: int = 2,
                    within_s: float = HEAL_WITHIN_S) -> Healed:
    """SparkLoop sends every webhook `copies` times, over HTTP to gunicorn (`web_concurrency`
    processes): every `at_once`-th webhook with all its copies at the same moment (the web
    processes race on its key), the others once and again 1 s and 5 s later (while its
    deliveries run, or after they are done). Each copy is answered 200; one event is stored and
    delivered once. The "fault" ends with the last copy posted."""
    sandbox.configure(latency_ms={"spruce": 20})
    app = drill.app(WEB_CONCURRENCY=str(web_concurrency))
    port = free_port()
    web = drill.start_web("web", port)
    watched = {"web": web, **_delivering(drill, workers)}
    stream = Stream(over_http(lambda: f"http://127.0.0.1:{port}"), _redeemed(subscribers), per_second=per_second,
                    copies=copies, at_once=at_once)
    stream.wait(timeout=within_s + subscribers / per_second + 10)
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, watched, within_s)


def rolling_restart(drill: Drill, sandbox, subscribers: int, restarts: int, every_s: float,
                    per_second: float = 10, within_s: float = HEAL_WITHIN_S) -> Healed:
    """A deploy, `restarts` times, under webhooks at `per_second`: a new web (gunicorn as the
    Procfile runs it) starts, the router sends to it, the old one gets SIGTERM and finishes what
    it is answering; then a new worker starts and an old one gets SIGTERM, finishing or handing
    back its deliveries. Spruce answers slowly, so the SIGTERMs land mid-delivery."""
    sandbox.configure(latency_ms={"spruce": 150})
    app = drill.app(WEB_CONCURRENCY="2")
    port = free_port()
    webs = [drill.start_web("web0", port)]
    router = [f"http://127.0.0.1:{port}"]
    workers = [drill.start_worker(f"worker{n}", supervised=True, as_procfile=True) for n in range(2)]
    beat = drill.start_beat()
    stream = Stream(over_http(lambda: router[0]), _redeemed(subscribers), per_second=per_second)
    for restart in range(1, restarts + 1):
        time.sleep(every_s)
        port = free_port()
        webs.append(drill.start_web(f"web{restart}", port))
        router[0] = f"http://127.0.0.1:{port}"
        _stop_gracefully(webs.pop(0))
        workers.append(drill.start_worker(f"worker{restart + 1}", supervised=True, as_procfile=True))
        _stop_gracefully(workers.pop(0))
    watched = {"web": webs[0], "beat": beat, **{f"worker{n}": w for n, w in enumerate(workers)}}
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, watched, within_s)


def _stop_gracefully(process: subprocess.Popen, within_s: float = 30.0) -> None:
    """SIGTERM, as a platform stops a dyno; it must be gone before the SIGKILL would come."""
    process.terminate()
    process.wait(timeout=within_s)
