"""Fault drills with real processes: supervised workers (`relay worker`), beat, a stream of
webhooks, and the faults of Relay's own infrastructure: workers killed, Redis restarted empty,
PostgreSQL restarted. Each scenario returns what it measured; the suite runs them small
(tests/test_drill_*.py) and bench/drills.py at the size of the incidents they stand for.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from relay.models import DeliveryStatus
from tests.conftest import TOKEN, deliveries, events, load_fixture, post_event, sandbox_state, wait_for
from web import create_app

REPO = Path(__file__).resolve().parent.parent
HEAL_WITHIN_S = 60.0
PROCFILE = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line.strip())
TERMINAL = {"done", "failed", "invalid", "unhandled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
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
    """Webhooks posted from a thread at a steady rate; a failed post (a 5xx: the store down; no
    answer: the web restarting) is posted again after half a second, as SparkLoop retries."""
    post: Callable[[dict], int | None]
    payloads: list[dict]
    per_second: float
    answers: list[int] = field(default_factory=list)  # every answer, retried ones too
    retried: int = 0

    def __post_init__(self):
        self.thread = threading.Thread(target=self._post_all, daemon=True, name="webhooks")
        self.thread.start()

    def _post_all(self) -> None:
        for payload in self.payloads:
            started = time.monotonic()
            for _ in range(240):  # SparkLoop's retries, bounded
                status = self.post(payload)
                if status is not None:
                    self.answers.append(status)
                    if status < 500:
                        break
                self.retried += 1
                time.sleep(0.5)
            time.sleep(max(0.0, 1 / self.per_second - (time.monotonic() - started)))

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the webhook stream did not finish"


def all_events_done(app) -> bool:
    try:
        return all(e.status == "done" for e in events(app))
    except Exception:  # the store itself may be the fault
        return False


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


@dataclass
class Healed:
    """What a drill measured: how long after the fault's end every event was done; `retried`:
    webhooks posted again (no answer, or a 5xx); `lease_waits`: deliveries that waited for a
    dead worker's lease to run out instead of being handed back."""
    events: int
    healed_s: float | None
    answers: dict[int, int]
    duplicates: list[str]
    dead: list[str]
    retried: int = 0
    lease_waits: int = 0


def verdict(drill: Drill, app, sandbox, stream: Stream, fault_ended: float, subscribers: int,
            watched: dict[str, subprocess.Popen]) -> Healed:
    done = wait_for(lambda: all_events_done(app), timeout=HEAL_WITHIN_S, interval=0.5)
    healed_s = time.monotonic() - fault_ended if done else None
    stream.wait(timeout=30)
    answers = {status: stream.answers.count(status) for status in sorted(set(stream.answers))}
    lease_waits = sum("lease expired" in (d.last_error or "") for d in deliveries(app))
    return Healed(len(events(app)), healed_s, answers, duplicate_effects(sandbox, subscribers),
                  [name for name, process in watched.items() if process.poll() is not None],
                  stream.retried, lease_waits)


# --- the scenarios --------------------------------------------------------------------------


def killed_workers(drill: Drill, sandbox, subscribers: int, kill_every_s: float, kills: int,
                   seed: int = 7) -> Healed:
    """Three supervised workers; every few seconds one of them dies: its Celery process is
    killed (OOM; `relay worker` starts it again), or the whole machine goes (a new one is
    started). Spruce answers slowly, so kills land mid-call."""
    chance = random.Random(seed)
    sandbox.configure(latency_ms={"spruce": 100})
    app = drill.app()
    workers = {f"worker{n}": drill.start_worker(f"worker{n}", supervised=True) for n in range(3)}
    beat = drill.start_beat()
    stream = Stream(through_app(app), [reward_event("reward_redeemed", n) for n in range(subscribers)], per_second=10)
    for kill in range(kills):
        time.sleep(kill_every_s)
        name = chance.choice(sorted(workers))
        child = Drill.worker_of(workers[name])
        if kill % 2 == 0 and child:
            os.kill(child, signal.SIGKILL)  # the worker process only: its supervisor restarts it
        else:
            drill.kill(workers.pop(name))  # the machine: gone with everything on it
            workers[f"worker{len(drill.processes)}"] = drill.start_worker(f"worker{len(drill.processes)}",
                                                                         supervised=True)
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, {**workers, "beat": beat})


def redis_restarted_empty(drill: Drill, sandbox, redis_server: RedisServer, subscribers: int,
                          down_s: float, after_s: float = 4.0) -> Healed:
    """Webhooks at 10/s; Redis dies after `after_s` and comes back `down_s` later with nothing.
    The vendors' limits are low enough that deliveries wait for throttle slots: workers hold
    messages with a countdown, as in production, when Redis goes."""
    app = drill.app(REDIS_URL=redis_server.url, SPRIG_RATE_LIMIT="8/1s", SPRUCE_RATE_LIMIT="40/1s")
    workers = {f"worker{n}": drill.start_worker(f"worker{n}", supervised=True, as_procfile=True) for n in range(2)}
    beat = drill.start_beat()
    stream = Stream(through_app(app), [reward_event("reward_redeemed", n) for n in range(subscribers)], per_second=10)
    time.sleep(after_s)
    redis_server.crash()
    time.sleep(down_s)
    redis_server.start()
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, {**workers, "beat": beat})


def postgres_restarted(drill: Drill, sandbox, proxy: TcpProxy, subscribers: int, down_s: float,
                       after_s: float = 4.0) -> Healed:
    """Webhooks at 10/s; PostgreSQL goes away after `after_s` for `down_s` (its connections
    cut, new ones refused), for the web, the workers and beat alike."""
    sandbox.configure(latency_ms={"spruce": 50})
    app = drill.app(DATABASE_URL=proxy.url_for(drill.env["DATABASE_URL"]))
    workers = {f"worker{n}": drill.start_worker(f"worker{n}", supervised=True) for n in range(2)}
    beat = drill.start_beat()
    stream = Stream(through_app(app), [reward_event("reward_redeemed", n) for n in range(subscribers)], per_second=10)
    time.sleep(after_s)
    proxy.outage(down_s)
    time.sleep(down_s)
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, {**workers, "beat": beat})


def rolling_restart(drill: Drill, sandbox, subscribers: int, restarts: int, every_s: float) -> Healed:
    """A deploy, `restarts` times, under webhooks at 10/s: a new web (gunicorn as the Procfile
    runs it) starts, the router sends to it, the old one gets SIGTERM and finishes what it is
    answering; then a new worker starts and an old one gets SIGTERM, finishing or handing back
    its deliveries. Spruce answers slowly, so the SIGTERMs land mid-delivery."""
    sandbox.configure(latency_ms={"spruce": 150})
    app = drill.app(WEB_CONCURRENCY="2")
    port = free_port()
    webs = [drill.start_web("web0", port)]
    router = [f"http://127.0.0.1:{port}"]
    workers = [drill.start_worker(f"worker{n}", supervised=True, as_procfile=True) for n in range(2)]
    beat = drill.start_beat()
    stream = Stream(over_http(lambda: router[0]), [reward_event("reward_redeemed", n) for n in range(subscribers)],
                    per_second=10)
    for restart in range(1, restarts + 1):
        time.sleep(every_s)
        port = free_port()
        webs.append(drill.start_web(f"web{restart}", port))
        router[0] = f"http://127.0.0.1:{port}"
        _stop_gracefully(webs.pop(0))
        workers.append(drill.start_worker(f"worker{restart + 1}", supervised=True, as_procfile=True))
        _stop_gracefully(workers.pop(0))
    watched = {"web": webs[0], "beat": beat, **{f"worker{n}": w for n, w in enumerate(workers)}}
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, watched)


def _stop_gracefully(process: subprocess.Popen, within_s: float = 30.0) -> None:
    """SIGTERM, as a platform stops a dyno; it must be gone before the SIGKILL would come."""
    process.terminate()
    process.wait(timeout=within_s)
