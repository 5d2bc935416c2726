"""Delivery under the throttle, with the Procfile's worker (`relay worker --concurrency 4`):

    python -m bench.delivery latency          # 20 new_referral/s for 30 s, far under every limit
    python -m bench.delivery spruce-headers   # SPRUCE_RATE_LIMIT ten times what Spruce allows
    python -m bench.delivery drain            # 10,000 queued Sprig deliveries against its limit

latency: the time from each webhook's 200 to its Sprig delivery's end (`finished_at`, written
right after Sprig answered: an upper bound of the call's time), p50/p90/p99/max, and any 429.
spruce-headers: the sandbox's Spruce allows 30 calls per 60 s, Relay is told 300/60s, 24
new_referral events on 2 worker processes: every event done, and how many 429s.
drain: 10,000 reward_unlocked webhooks stored with no worker running (Sprig only, one call
each), then the worker starts: achieved rate / limit from the sandbox's log, 429s, and a plot
of Sprig calls per second against the limit (--plot, PNG).

Needs the machine's PostgreSQL (it recreates the database relay_bench_delivery) and Redis (it
flushes db 14). The sandbox runs in this process, gunicorn, the worker and beat as processes
of their own, whose logs stay in the temporary folder printed first.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

from bench.throttle import Processes, _answers, flush_redis, wait_until
from sandbox import SandboxSettings, serve_in_thread
from testbed.net import free_port

ROOT = Path(__file__).resolve().parent.parent

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "relay_bench_delivery"
REDIS_URL = "redis://127.0.0.1:6379/14"
TOKEN = "bench-token"
FIXTURES = ROOT / "sandbox" / "fixtures" / "sparkloop"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", choices=["latency", "spruce-headers", "drain"])
    parser.add_argument("--rate", type=float, default=20.0, help="latency: webhooks per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="latency: how long to post")
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes")
    parser.add_argument("--events", type=int, default=10_000, help="drain: queued deliveries")
    parser.add_argument("--limit", default="100/1s", help="drain: the Sprig limit, both sides")
    parser.add_argument("--plot", type=Path, help="drain: write the PNG here")
    parser.add_argument("--database", default=BENCH_DB, help="the database to recreate")
    parser.add_argument("--redis-url", default=REDIS_URL, help="the Redis db to flush and use")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="relay-bench-delivery-"))
    print(f"logs in {logs}", flush=True)
    sandbox = serve_in_thread("127.0.0.1", 0, settings=SandboxSettings(request_log_size=100_000))
    try:
        with Processes(logs) as processes:
            return {"latency": latency, "spruce-headers": spruce_headers, "drain": drain}[args.run](
                processes, sandbox, args)
    finally:
        sandbox.stop()


# --- the runs -------------------------------------------------------------------------------

def latency(processes: Processes, sandbox, args) -> int:
    sandbox.configure(rate_limit={"sprig": {"limit": 1000, "window_s": 10}, "spruce": {"limit": 6000, "window_s": 60}})
    relay = Relay(processes, sandbox, args.database, args.redis_url, SPRIG_RATE_LIMIT="1000/10s", SPRUCE_RATE_LIMIT="6000/60s")
    relay.start_worker(args.concurrency)
    time.sleep(5)  # the worker's pool up before the first webhook, as in production
    answered = post_steadily(relay.url, for_new_people("new_referral", int(args.rate * args.seconds)), args.rate)
    wait_until(lambda: relay.unfinished() == 0, 120, "not every event was done")
    finished = relay.sprig_finished()
    first = min(answered.values())
    waits = sorted(finished[sub] - at for sub, at in answered.items())
    settled = sorted(finished[sub] - at for sub, at in answered.items() if at >= first + SETTLING_S)
    print(f"latency from the 200 to Sprig, {len(waits)} webhooks at {args.rate:g}/s, "
          f"{args.concurrency} worker processes: {_quantiles(waits)}; 429s {count_429(sandbox)}; "
          f"deferrals {relay.deferrals()}")
    print(f"  without the first {SETTLING_S:g} s (each pool process's first deliveries): "
          f"{len(settled)} webhooks, {_quantiles(settled)}")
    return 0


SETTLING_S = 2.0


def _quantiles(waits: list[float]) -> str:
    q = statistics.quantiles(waits, n=100)
    return (f"p50 {q[49] * 1000:.0f} ms, p90 {q[89] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, "
            f"max {waits[-1] * 1000:.0f} ms")


def spruce_headers(processes: Processes, sandbox, args) -> int:
    sandbox.configure(rate_limit={"spruce": {"limit": 30, "window_s": 60}})
    relay = Relay(processes, sandbox, args.database, args.redis_url, SPRUCE_RATE_LIMIT="300/60s")
    post_steadily(relay.url, for_new_people("new_referral", 24), rate=50)
    started = time.monotonic()
    relay.start_worker(2)
    wait_until(lambda: relay.unfinished() == 0, 600, "not every event was done")
    calls = vendor_calls(sandbox, "spruce")
    times = sorted(c["at"] for c in calls if c["status"] < 400)
    busiest = max(sum(1 for t in times if s <= t < s + 60) for s in times)
    print(f"spruce-headers: 24 new_referral events, SPRUCE_RATE_LIMIT=300/60s against Spruce's 30/60s, "
          f"2 worker processes: done {relay.done()}/24 in {time.monotonic() - started:.0f} s, "
          f"{len(calls)} Spruce requests, 429s {count_429(sandbox)}, most in any 60 s {busiest}")
    return 0 if count_429(sandbox) == 0 and relay.done() == 24 else 1


def drain(processes: Processes, sandbox, args) -> int:
    limit, window = args.limit.rstrip("s").split("/")
    limit, window_s = int(limit), float(window)
    sandbox.configure(rate_limit={"sprig": {"limit": limit, "window_s": window_s}})
    relay = Relay(processes, sandbox, args.database, args.redis_url, SPRIG_RATE_LIMIT=args.limit, SPRUCE_API_TOKEN="")
    post_steadily(relay.url, for_new_people("reward_unlocked", args.events), rate=None)
    print(f"{args.events} deliveries queued", flush=True)
    relay.start_worker(args.concurrency)
    wait_until(lambda: relay.unfinished() == 0, args.events / (limit / window_s) * 2 + 120,
               "not every event was done")
    times = sorted(c["at"] for c in vendor_calls(sandbox, "sprig") if c["status"] == 202)
    rate, allowed = (len(times) - 1) / (times[-1] - times[0]), limit / window_s
    print(f"drain: {len(times)} Sprig calls in {times[-1] - times[0]:.1f} s at {rate:.2f}/s against "
          f"{allowed:g}/s: {rate / allowed:.3f} of the limit, 429s {count_429(sandbox)}, "
          f"{args.concurrency} worker processes")
    if args.plot:
        plot(times, allowed, window_s, args.plot)
    return 0


# --- Relay's processes ----------------------------------------------------------------------

class Relay:
    """gunicorn as the Procfile runs it, and workers, on a fresh database and Redis db."""

    def __init__(self, processes: Processes, sandbox, database: str = BENCH_DB, redis_url: str = REDIS_URL,
                 **overrides: str):
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {database}")
        flush_redis(redis_url)
        self.processes, self.database = processes, database
        port = free_port()
        self.env = {
            **os.environ, "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "REDIS_URL": redis_url, "SPARKLOOP_WEBHOOK_TOKEN": TOKEN, "LOG_FORMAT": "json",
            "SPRIG_API_URL": sandbox.sprig_url, "SPRIG_API_KEY": sandbox.state.settings.sprig_api_key,
            "SPRUCE_API_URL": sandbox.spruce_url, "SPRUCE_API_TOKEN": sandbox.state.settings.spruce_api_token,
            "PORT": str(port), **overrides,
        }
        relay = str(Path(sys.executable).with_name("relay"))
        subprocess.run([relay, "db", "upgrade"], env=self.env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        processes.start("web", [sys.executable, "-m", "gunicorn", "web:create_app()", "-c",
                                str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}"], self.env)
        processes.start("beat", [sys.executable, "-m", "celery", "-A", "workers", "--quiet", "beat",
                                 "--schedule", str(processes.logs / "beat-schedule")], self.env)
        self.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{self.url}/healthz"), 30, "gunicorn did not start")

    def start_worker(self, concurrency: int) -> None:
        relay = str(Path(sys.executable).with_name("relay"))
        self.processes.start("worker", [relay, "worker", "--loglevel", "INFO", "--concurrency", str(concurrency)],
                             self.env)

    def _query(self, sql: str):
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{self.database}") as conn:
            return conn.execute(sql).fetchall()

    def unfinished(self) -> int:
        return self._query("SELECT count(*) FROM events WHERE status NOT IN ('done', 'failed')")[0][0]

    def done(self) -> int:
        return self._query("SELECT count(*) FROM events WHERE status = 'done'")[0][0]

    def deferrals(self) -> int:
        return self._query("SELECT coalesce(sum(deferrals), 0) FROM deliveries")[0][0]

    def sprig_finished(self) -> dict[str, float]:
        rows = self._query("SELECT e.payload->'subscriber'->>'id', extract(epoch FROM d.finished_at) "
                           "FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.destination = 'sprig'")
        return {sub: float(at) for sub, at in rows}


# --- webhooks -------------------------------------------------------------------------------

def for_new_people(fixture: str, count: int, first: int = 0) -> list[dict]:
    """`count` copies of a documented payload, each for a subscriber (and, where the event names
    one, a referrer) of its own, numbered from `first`: every copy another event."""
    template = json.loads((FIXTURES / f"{fixture}.json").read_text())
    payloads = []
    for n in range(first, first + count):
        payload = json.loads(json.dumps(template))
        payload["subscriber"].update(id=f"sub_bench_{n}", email=f"bench-{n}@example.com")
        if "referrer" in payload:
            payload["referrer"].update(id=f"sub_referrer_{n}", email=f"referrer-{n}@example.com")
        payloads.append(payload)
    return payloads


def post_steadily(url: str, payloads: list[dict], rate: float | None) -> dict[str, float]:
    """Post each payload (at `rate` per second, or as fast as 8 senders go); return when each
    subscriber's webhook was answered 200 (epoch seconds)."""
    answered, lock, started = {}, threading.Lock(), time.monotonic()
    client = httpx.Client(timeout=10, headers={"SparkLoop-Token": TOKEN})

    def post(item: tuple[int, dict]) -> None:
        n, payload = item
        if rate:
            time.sleep(max(started + n / rate - time.monotonic(), 0))
        response = client.post(f"{url}/webhooks/sparkloop", json=payload)
        response.raise_for_status()
        with lock:
            answered[payload["subscriber"]["id"]] = time.time()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, enumerate(payloads)))
    client.close()
    return answered


# --- the vendor's side ----------------------------------------------------------------------

def vendor_calls(sandbox, vendor: str) -> list[dict]:
    return [r for r in sandbox.state.snapshot()["requests"] if r["vendor"] == vendor]


def count_429(sandbox) -> int:
    return sum(1 for r in sandbox.state.snapshot()["requests"] if r["status"] == 429)


def plot(times: list[float], allowed: float, window_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = times[0]
    seconds = int(times[-1] - start) + 1
    per_second = [0] * seconds
    for t in times:
        per_second[int(t - start)] += 1
    figure, axes = plt.subplots(figsize=(8, 3.2), dpi=110)
    axes.plot(range(seconds), per_second, linewidth=0.6, alpha=0.6, label="Sprig calls per second")
    span = max(int(window_s), 1)  # the vendor's window: what its limit is counted over
    rolling = [sum(per_second[max(0, i - span + 1):i + 1]) / span for i in range(seconds)]
    axes.plot(range(seconds), rolling, linewidth=1.5, label=f"mean over the last {span} s")
    axes.axhline(allowed, color="red", linestyle="--", linewidth=1, label=f"limit ({allowed:g}/s)")
    axes.set_xlabel("seconds since the first call")
    axes.set_ylabel("calls per second")
    axes.set_ylim(0, allowed * 1.5)
    axes.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
