"""The drills, one function each: the fault it stands for, brought about while webhooks come
in, then its verdict (testbed.drills.verdicts). The suite runs them small, bench/drills/ at
full size."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import sqlalchemy as sa

from relay.models import Event, EventStatus
from relay.runtime import Runtime
from testbed.drills.processes import Drill, RedisServer, TcpProxy
from testbed.drills.traffic import Stream, over_http, reward_event, through_app
from testbed.drills.verdicts import HEAL_WITHIN_S, Healed, unsettled, verdict
from testbed.net import free_port
from testbed.waiting import wait_for


def _redeemed(subscribers: int) -> list[dict]:
    return [reward_event("reward_redeemed", n) for n in range(subscribers)]


def _delivering(drill: Drill, workers: int = 2) -> dict[str, subprocess.Popen]:
    """`workers` supervised workers as the Procfile runs them, and beat."""
    started = {
        f"worker{n}": drill.start_worker(f"worker{n}", supervised=True, as_procfile=True) for n in range(workers)
    }
    return {**started, "beat": drill.start_beat()}


def _first_done(drill: Drill, app, timeout: float = 60.0) -> None:
    """Until the workers have finished an event: a fault timed from the stream's start would
    otherwise hit workers still starting, on a loaded machine."""

    def one_done() -> bool:
        with Runtime.of(app).db.session() as session:
            return session.scalar(sa.select(Event.id).where(Event.status == EventStatus.DONE).limit(1)) is not None

    assert wait_for(one_done, timeout=timeout, interval=0.2), drill.logs()


def killed_workers(
    drill: Drill,
    sandbox,
    subscribers: int,
    kill_every_s: float,
    kills: int | None,
    seed: int = 7,
    per_second: float = 10,
    latency_ms: int = 100,
    workers: int = 3,
    kill_after_s: float = 60.0,
    within_s: float = HEAL_WITHIN_S,
) -> Healed:
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
            running[f"worker{len(drill.processes)}"] = drill.start_worker(
                f"worker{len(drill.processes)}", supervised=True
            )
        kill += 1
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, {**running, "beat": beat}, within_s)


def redis_restarted_empty(
    drill: Drill,
    sandbox,
    redis_server: RedisServer,
    subscribers: int,
    down_s: float,
    after_s: float = 4.0,
    per_second: float = 10,
    within_s: float = HEAL_WITHIN_S,
) -> Healed:
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


def postgres_restarted(
    drill: Drill,
    sandbox,
    proxy: TcpProxy,
    subscribers: int,
    down_s: float,
    after_s: float = 4.0,
    per_second: float = 10,
    within_s: float = HEAL_WITHIN_S,
) -> Healed:
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


def vendor_down(
    drill: Drill,
    sandbox,
    subscribers: int,
    down_s: float,
    after_s: float = 3.0,
    vendor: str = "spruce",
    per_second: float = 10,
    workers: int = 2,
    within_s: float = HEAL_WITHIN_S,
    **env: str,
) -> Healed:
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


def rate_limit_storm(
    drill: Drill,
    sandbox,
    subscribers: int,
    storms: int,
    storm_s: float,
    every_s: float,
    retry_after_s: int = 2,
    per_second: float = 10,
    workers: int = 2,
    within_s: float = HEAL_WITHIN_S,
    **env: str,
) -> Healed:
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
        sandbox.configure(
            faults=[
                {"vendor": vendor, "status": 429, "times": None, "retry_after": retry_after_s}
                for vendor in ("sprig", "spruce")
            ]
        )
        time.sleep(storm_s)
        sandbox.configure(faults=[])
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, watched, within_s)


def slow_vendor(
    drill: Drill,
    sandbox,
    subscribers: int,
    slow_s: float,
    after_s: float = 3.0,
    timeout_s: int = 1,
    latency_ms: int | None = None,
    vendors: tuple[str, ...] = ("sprig", "spruce"),
    per_second: float = 10,
    workers: int = 2,
    flap_s: float | None = None,
    within_s: float = HEAL_WITHIN_S,
    **env: str,
) -> Healed:
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


def duplicate_storm(
    drill: Drill,
    sandbox,
    subscribers: int,
    copies: int = 3,
    at_once: int = 2,
    per_second: float = 10,
    web_concurrency: int = 2,
    workers: int = 2,
    within_s: float = HEAL_WITHIN_S,
) -> Healed:
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
    stream = Stream(
        over_http(lambda: f"http://127.0.0.1:{port}"),
        _redeemed(subscribers),
        per_second=per_second,
        copies=copies,
        at_once=at_once,
    )
    stream.wait(timeout=within_s + subscribers / per_second + 10)
    return verdict(drill, app, sandbox, stream, time.monotonic(), subscribers, watched, within_s)


def rolling_restart(
    drill: Drill,
    sandbox,
    subscribers: int,
    restarts: int,
    every_s: float,
    per_second: float = 10,
    within_s: float = HEAL_WITHIN_S,
) -> Healed:
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
