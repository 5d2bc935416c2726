"""Throttle benchmark: Relay's shared limiter against Celery's built-in per-worker rate_limit.

    python -m bench.throttle [--processes 4] [--limit 60] [--window 10] [--events 180]

Runs the real topology on this machine: the vendor sandbox (its own process, Sprig limited to
LIMIT requests per WINDOW seconds), gunicorn serving Relay, PROCESSES Celery worker processes
plus beat, PostgreSQL (database relay_bench, recreated) and Redis (db 14, flushed). It posts
EVENTS reward_unlocked webhooks for distinct subscribers (Sprig only: each needs one call) and
waits until every event is done. Then, with the same number of worker processes and the same
work, it runs the usual Celery approach (bench/celery_baseline.py) twice: rate_limit set to the
vendor's limit in every process, and rate_limit divided by the number of processes. Last,
both again with one of the processes down (a restarting dyno, a scaled-down formation).

For each run it prints the achieved request rate against the limit (from the sandbox's request
log: accepted calls over the time between the first and the last), the 429 count, the run's
duration, and vendor calls per event against the minimum (one Sprig call per subscriber).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

from testbed.net import free_port

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "sandbox" / "fixtures" / "sparkloop" / "reward_unlocked.json"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "relay_bench"
REDIS_URL = "redis://127.0.0.1:6379/14"
TOKEN = "bench-token"
SPRIG_KEY = "bench-sprig-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4, help="Celery worker processes per run")
    parser.add_argument("--limit", type=int, default=60, help="Sprig requests allowed per window")
    parser.add_argument("--window", type=float, default=10.0, help="the window, seconds")
    parser.add_argument("--events", type=int, default=180, help="webhooks to deliver per run")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a run after this")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    print(f"limit {args.limit}/{args.window:g}s = {args.limit / args.window:.2f} req/s; "
          f"{args.processes} worker processes; {args.events} events; logs in {logs}", flush=True)
    with Processes(logs) as processes:
        sandbox = start_sandbox(processes, args)
        n, rate = args.processes, args.limit / args.window
        results = [
            ("Relay (shared limiter in Redis)", run_relay(processes, sandbox, args, n)),
            ("Celery rate_limit = limit", run_baseline(processes, sandbox, args, n, rate)),
            ("Celery rate_limit = limit / processes", run_baseline(processes, sandbox, args, n, rate / n)),
            # A restarting dyno or a scaled-down formation: the division no longer matches.
            ("Relay, one process down", run_relay(processes, sandbox, args, n - 1)),
            ("Celery limit / processes, one down", run_baseline(processes, sandbox, args, n - 1, rate / n)),
        ]
    print_table(results, args)


# --- the runs --------------------------------------------------------------------------------

def run_relay(processes: Processes, sandbox: str, args, workers_up: int) -> dict:
    reset_sandbox(sandbox, args)
    recreate_database()
    flush_redis()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{BENCH_DB}",
        "REDIS_URL": REDIS_URL,
        "SPARKLOOP_WEBHOOK_TOKEN": TOKEN,
        "SPRIG_API_URL": f"{sandbox}/sprig",
        "SPRIG_API_KEY": SPRIG_KEY,
        "SPRUCE_API_TOKEN": "",
        "SPRIG_RATE_LIMIT": f"{args.limit}/{args.window:g}s",
    }
    subprocess.run([str(Path(sys.executable).with_name("relay")), "db", "upgrade"], env=env, cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    web_port = free_port()
    web = processes.start("gunicorn", [sys.executable, "-m", "gunicorn", "web:create_app()",
                                       "--bind", f"127.0.0.1:{web_port}", "--workers", "2"], env)
    workers = [processes.start(f"relay-worker-{i}", celery_worker("workers", f"relay{i}"), env)
               for i in range(workers_up)]
    beat = processes.start("relay-beat", [sys.executable, "-m", "celery", "-A", "workers", "beat",
                                          "--schedule", str(processes.logs / "beat-schedule")], env)
    web_url = f"http://127.0.0.1:{web_port}"
    wait_until(lambda: _answers(f"{web_url}/healthz"), 30, "gunicorn did not start")
    started = time.monotonic()
    post_webhooks(web_url, args.events)
    wait_until(lambda: relay_unfinished() == 0, args.timeout, "Relay did not finish every event")
    elapsed = time.monotonic() - started
    for process in (*workers, beat, web):
        processes.stop(process)
    return measure(sandbox, args, elapsed)


def run_baseline(processes: Processes, sandbox: str, args, workers_up: int,
                 per_process_rate: float) -> dict:
    reset_sandbox(sandbox, args)
    flush_redis()
    env = {**os.environ, "BENCH_BROKER_URL": REDIS_URL, "BENCH_SPRIG_URL": f"{sandbox}/sprig",
           "BENCH_SPRIG_KEY": SPRIG_KEY, "BENCH_TASK_RATE_LIMIT": f"{per_process_rate * 60:g}/m",
           "PYTHONPATH": str(ROOT)}
    workers = [processes.start(f"baseline-worker-{i}", celery_worker("bench.celery_baseline", f"base{i}"), env)
               for i in range(workers_up)]
    os.environ.update({k: env[k] for k in ("BENCH_BROKER_URL", "BENCH_SPRIG_URL", "BENCH_SPRIG_KEY")})
    from bench.celery_baseline import upsert_sprig_user

    time.sleep(3)  # let every worker connect before the queue fills, as Relay's had the web start
    started = time.monotonic()
    for i in range(args.events):
        upsert_sprig_user.delay({"userId": f"bench-{i}@example.com",
                                 "attributes": {"sparkloop_total_referrals": "4"}})
    wait_until(lambda: sprig_accepted(sandbox) >= args.events, args.timeout,
               "the baseline did not deliver every event")
    elapsed = time.monotonic() - started
    for process in workers:
        processes.stop(process)
    return measure(sandbox, args, elapsed)


def celery_worker(app: str, name: str) -> list[str]:
    # One process per worker, as each PaaS dyno or container would be.
    return [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "solo", "--loglevel", "INFO",
            "-n", f"{name}@%h", "--without-gossip", "--without-mingle"]


def post_webhooks(web_url: str, count: int) -> None:
    template = json.loads(FIXTURE.read_text())

    def post(i: int) -> None:
        payload = json.loads(json.dumps(template))
        payload["subscriber"].update(id=f"sub_bench_{i}", email=f"bench-{i}@example.com")
        response = httpx.post(f"{web_url}/webhooks/sparkloop", json=payload, timeout=10,
                              headers={"SparkLoop-Token": TOKEN})
        response.raise_for_status()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, range(count)))


# --- measuring -------------------------------------------------------------------------------

def measure(sandbox: str, args, elapsed: float) -> dict:
    calls = [r for r in httpx.get(f"{sandbox}/_sandbox/state", timeout=10).json()["requests"]
             if r["vendor"] == "sprig"]
    accepted = sorted(r["at"] for r in calls if r["status"] == 202)
    span = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
    rate = (len(accepted) - 1) / span if span else 0.0
    return {
        "rate": rate,
        "share": rate / (args.limit / args.window),
        "throttled": sum(1 for r in calls if r["status"] == 429),
        "calls_per_event": len(calls) / args.events,
        "elapsed": elapsed,
    }


def print_table(results: list[tuple[str, dict]], args) -> None:
    limit_rate = args.limit / args.window
    print()
    print(f"{'run':40} {'req/s':>7} {'of limit':>9} {'429s':>6} {'calls/event':>12} {'minimum':>8} {'took':>7}")
    for name, r in results:
        print(f"{name:40} {r['rate']:7.2f} {r['share']:9.1%} {r['throttled']:6d} "
              f"{r['calls_per_event']:12.2f} {1:8d} {r['elapsed']:6.1f}s")
    print(f"(limit {limit_rate:.2f} req/s; minimum: one Sprig call per event's subscriber)")


def sprig_accepted(sandbox: str) -> int:
    stats = httpx.get(f"{sandbox}/_sandbox/state", timeout=10).json()["requests"]
    return sum(1 for r in stats if r["vendor"] == "sprig" and r["status"] == 202)


def relay_unfinished() -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{BENCH_DB}") as conn:
        return conn.execute("SELECT count(*) FROM events WHERE status NOT IN ('done', 'failed')").fetchone()[0]


# --- the topology ----------------------------------------------------------------------------

class Processes:
    """Every process the benchmark starts, stopped by pid however the run ends."""

    def __init__(self, logs: Path):
        self.logs, self._running = logs, []
        self.started: dict[str, subprocess.Popen] = {}  # by name, the latest of each

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for process in reversed(self._running):
            self.stop(process)

    def start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self._running.append(process)
        self.started[name] = process
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the process and its children
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if process in self._running:
            self._running.remove(process)


def start_sandbox(processes: Processes, args) -> str:
    port = free_port()
    env = {**os.environ, "SANDBOX_SPRIG_API_KEY": SPRIG_KEY}
    processes.start("sandbox", [sys.executable, "-m", "sandbox", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{url}/_sandbox/config"), 30, "the sandbox did not start")
    return url


def reset_sandbox(sandbox: str, args) -> None:
    httpx.post(f"{sandbox}/_sandbox/reset", timeout=10).raise_for_status()
    httpx.post(f"{sandbox}/_sandbox/config", timeout=10, json={
        "rate_limit": {"sprig": {"limit": args.limit, "window_s": args.window}},
    }).raise_for_status()


def recreate_database() -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


def flush_redis(url: str = REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def wait_until(predicate, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SystemExit(f"benchmark stopped: {message} within {timeout_s:g}s")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
