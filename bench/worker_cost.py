"""Worker cost: CPU per delivery beside a no-op Celery task, same worker settings.

    python -m bench.worker_cost [--deliveries 500] [--repeat 1] [--vendor sprig|spruce] [--py-spy out.txt]
                                [--profile out.html]

Both workers run as `celery worker --pool solo --concurrency 1` (one process: its CPU is the
whole cost, the dispatcher's thread included) against the machine's Redis. Relay's worker gets
`--deliveries` reward_unlocked events (Sprig: one call each, Spruce off) stored while it idles,
and the CPU its process spent (user + system, from /proc) from then until every event is done
is divided by the count; the baseline worker runs as many no-op tasks (bench/celery_baseline.py's
`noop`), measured the same way. `--vendor spruce`: Spruce only (Sprig off), first for new people
(a search, a contact, a conversation, the note: the calls each made are counted from the
sandbox), then a reward_redeemed for each of the same people (the note alone). The sandbox runs
as a process of its own, so its CPU is not counted. With --py-spy, py-spy records the worker
while it delivers (raw collapsed stacks, for a flame graph or a sum by function); with
--profile, the same deliveries run once more in this process under pyinstrument (sandbox still
apart) and the profile is written as HTML, with the top lines printed.

Needs PostgreSQL (it recreates relay_bench_worker_cost) and Redis (it flushes db 14); py-spy on
the PATH for --py-spy.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.delivery import for_new_people
from bench.throttle import Processes, _answers, flush_redis, wait_until
from testbed.net import free_port

ROOT = Path(__file__).resolve().parent.parent

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "relay_bench_worker_cost"
REDIS_URL = "redis://127.0.0.1:6379/14"
SOLO = ["--pool", "solo", "--concurrency", "1", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1, help="Sprig: this many Relay and no-op pairs, and their median")
    parser.add_argument("--profile", type=Path, help="also profile the deliveries in process (HTML)")
    parser.add_argument("--py-spy", type=Path, dest="spy",
                        help="record the Relay worker with py-spy (raw, collapsed stacks) into this file")
    parser.add_argument("--vendor", choices=["sprig", "spruce"], default="sprig",
                        help="spruce: Spruce only, new people (a contact, a conversation, a note), then the "
                             "same people again (the note alone)")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="relay-bench-worker-cost-"))
    with Processes(logs) as processes:
        sandbox = start_sandbox(processes)
        env = relay_env(sandbox, args.vendor)
        if args.vendor == "spruce":
            return spruce(processes, env, sandbox, args.deliveries, args.spy)
        ratios = []
        for pair in range(args.repeat):  # pairs back to back: the machine's drift shows in each ratio
            if pair:
                env = relay_env(sandbox)  # a fresh store: the same new people again
            relay_ms = relay_cpu_ms(processes, env, args.deliveries, args.spy)
            noop_ms = noop_cpu_ms(processes, args.deliveries)
            ratios.append(relay_ms / noop_ms)
            print(f"CPU per task, {args.deliveries} each, solo pool: Relay's Sprig delivery {relay_ms:.2f} ms, "
                  f"no-op task {noop_ms:.2f} ms, ratio {ratios[-1]:.1f}", flush=True)
        if args.repeat > 1:
            print(f"median ratio of {args.repeat} pairs: {statistics.median(ratios):.2f}")
        if args.profile:
            profile(env, args.deliveries, args.profile)
    return 0


def spruce(processes: Processes, env: dict[str, str], sandbox: str, count: int, spy: Path | None) -> int:
    """Spruce's deliveries: `count` new people, then the same people again, each run beside as
    many no-op tasks; with the Spruce calls each made, from the sandbox's log."""
    calls_before = spruce_calls(sandbox)
    first_ms = relay_cpu_ms(processes, env, count, spy, fresh=True)
    calls_first = spruce_calls(sandbox) - calls_before
    again_ms = relay_cpu_ms(processes, env, count, None, fresh=False)
    calls_again = spruce_calls(sandbox) - calls_before - calls_first
    noop_ms = noop_cpu_ms(processes, count)
    print(f"CPU per task, {count} each, solo pool: no-op task {noop_ms:.2f} ms")
    print(f"  Spruce, new people: {first_ms:.2f} ms, {calls_first / count:.1f} calls each, ratio {first_ms / noop_ms:.1f}")
    print(f"  Spruce, known people: {again_ms:.2f} ms, {calls_again / count:.1f} calls each, "
          f"ratio {again_ms / noop_ms:.1f}")
    return 0


def spruce_calls(sandbox: str) -> int:
    import httpx

    by_status = httpx.get(f"{sandbox}/_sandbox/stats", timeout=10).json().get("spruce", {})
    return sum(by_status.values())


def start_sandbox(processes: Processes) -> str:
    port = free_port()
    processes.start("sandbox", [sys.executable, "-m", "sandbox", "--port", str(port)], dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{url}/_sandbox/config"), 30, "the sandbox did not start")
    import httpx

    limits = {"spruce": {"limit": 1_000_000}, "sprig": {"limit": 1_000_000}}
    httpx.post(f"{url}/_sandbox/config", json={"rate_limit": limits}, timeout=10).raise_for_status()
    return url


def relay_env(sandbox: str, vendor: str = "sprig") -> dict[str, str]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    env = {"DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{BENCH_DB}", "REDIS_URL": REDIS_URL,
           "SPARKLOOP_WEBHOOK_TOKEN": "bench-token", "SPRIG_API_URL": f"{sandbox}/sprig",
           "SPRIG_API_KEY": "sandbox-sprig-key", "SPRUCE_API_TOKEN": "", "SPRIG_RATE_LIMIT": "100000/1s",
           "LOG_FORMAT": "json"}
    if vendor == "spruce":
        env |= {"SPRIG_API_KEY": "", "SPRUCE_API_TOKEN": "sandbox-spruce-token", "SPRUCE_API_URL": f"{sandbox}/spruce/v1",
                "SPRUCE_RATE_LIMIT": "100000/1s"}
    from relay.db import Database

    Database(env["DATABASE_URL"]).upgrade()
    return env


def store_events(env: dict[str, str], count: int, first: int = 0, again: bool = False) -> None:
    """reward_unlocked events for `count` people; `again`: a second one each (redeemed)."""
    from web import create_app

    client = create_app(env).test_client()
    for payload in for_new_people("reward_redeemed" if again else "reward_unlocked", count, first):
        assert client.post("/webhooks/sparkloop", json=payload, headers={"SparkLoop-Token": "bench-token"}).status_code == 200


def relay_cpu_ms(processes: Processes, env: dict[str, str], count: int, spy: Path | None = None,
                 fresh: bool = True) -> float:
    """`count` events for new people (or, not `fresh`, for the people of the first `count`)."""
    if fresh:
        flush_redis()
    worker = processes.start("relay-worker", [sys.executable, "-m", "celery", "-A", "workers", "worker", *SOLO],
                             {**os.environ, **env})
    time.sleep(5)  # started and idle: its start-up is not the deliveries' cost
    recorder = None
    if spy is not None:  # py-spy's own CPU is its process's, not the worker's
        recorder = subprocess.Popen(["py-spy", "record", "--pid", str(worker.pid), "--rate", "250", "--gil",
                                     "--format", "raw", "--nonblocking", "--output", str(spy)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    before = cpu_seconds(worker.pid)
    store_events(env, count, again=not fresh)
    wait_until(lambda: unfinished(env) == 0, 600, "Relay did not deliver every event")
    spent = cpu_seconds(worker.pid) - before
    if recorder is not None:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(30)
    processes.stop(worker)
    return spent * 1000 / count


def noop_cpu_ms(processes: Processes, count: int) -> float:
    flush_redis()
    env = {**os.environ, "BENCH_BROKER_URL": REDIS_URL, "PYTHONPATH": str(ROOT), "BENCH_SPRIG_URL": "",
           "BENCH_SPRIG_KEY": "", "BENCH_TASK_RATE_LIMIT": ""}
    worker = processes.start("noop-worker", [sys.executable, "-m", "celery", "-A", "bench.celery_baseline", "worker",
                                             *SOLO], env)
    time.sleep(5)
    before = cpu_seconds(worker.pid)
    os.environ.update({k: env[k] for k in ("BENCH_BROKER_URL", "BENCH_SPRIG_URL", "BENCH_SPRIG_KEY")})
    import redis

    from bench.celery_baseline import noop

    for _ in range(count):
        noop.delay()
    counter = redis.Redis.from_url(REDIS_URL)
    wait_until(lambda: int(counter.get("bench:noop") or 0) >= count, 120, "the no-op worker did not finish")
    spent = cpu_seconds(worker.pid) - before
    processes.stop(worker)
    return spent * 1000 / count


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process (solo pool: the worker is this one process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def unfinished(env: dict[str, str]) -> int:
    with psycopg.connect(env["DATABASE_URL"].replace("+psycopg", "")) as conn:
        return conn.execute("SELECT count(*) FROM events WHERE status NOT IN ('done', 'failed')").fetchone()[0]


def profile(env: dict[str, str], count: int, out: Path) -> None:
    import sqlalchemy as sa
    from pyinstrument import Profiler

    from relay.models import Delivery
    from relay.runtime import Runtime
    from web import create_app
    from workers.engine import run_delivery

    store_events(env, count, first=10**6)
    app = create_app(env)
    with app.app_context():
        with Runtime.of(app).db.session() as session:
            ids = session.scalars(sa.select(Delivery.id).where(Delivery.status == "pending").order_by(Delivery.id)).all()
        runtime = Runtime.of(app)
        profiler = Profiler(interval=0.0005)
        started = time.process_time()
        with profiler:
            for delivery_id in ids:
                run_delivery(delivery_id, runtime)
        spent = time.process_time() - started
    out.write_text(profiler.output_html())
    print(f"in process under the profiler: {spent * 1000 / len(ids):.2f} ms CPU per delivery; profile: {out}")
    print(profiler.output_text(unicode=False, color=False, show_all=False)[:6000])


if __name__ == "__main__":
    raise SystemExit(main())
