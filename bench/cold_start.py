"""Latency from a cold start: what a deploy or a scale-up sees, where bench/delivery.py's
`latency` warms the workers for 5 s first.

    python -m bench.cold_start                    # both layouts, 100 new_referral at 20/s each
    python -m bench.cold_start --layout nodes     # 2 nodes of `celery -A workers worker --concurrency 2`
    python -m bench.cold_start --layout procfile  # one `relay worker --concurrency 4` (the Procfile's)

Per layout: a fresh database and Redis db, gunicorn as the Procfile runs it, beat, and 4 worker
processes started together; posting begins as soon as every worker node logs Celery's
`ready.`. It posts EVENTS new_referral webhooks, each for a new person, at RATE per second,
then reads, for each webhook, the time from its 200 to the sandbox's first Sprig call for its
people (the Sprig user's `createdAt`, in ms: the subscriber's or the referrer's, whichever came
first). Printed: p50/p90/p99/max, split at the moment a dispatcher published the Sprig delivery
(its `enqueued_at`), the same per second of arrival, and the CPU an idle worker spends (each
node's process tree, from /proc, over --idle-seconds once every event is done).

Needs the machine's PostgreSQL (it recreates --database) and Redis (--redis-url: its db is
flushed). The sandbox runs in this process (the vendors answer at once); logs stay in the
temporary folder printed first.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.delivery import BENCH_DB, REDIS_URL, Relay, for_new_people, post_steadily
from bench.throttle import Processes, wait_until
from sandbox import SandboxSettings, serve_in_thread

WORKER_PROCESSES = 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=["nodes", "procfile", "both"], default="both")
    parser.add_argument("--events", type=int, default=100, help="webhooks, each for new people")
    parser.add_argument("--rate", type=float, default=20.0, help="webhooks per second")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long idle CPU is measured")
    parser.add_argument("--database", default=BENCH_DB + "_cold", help="the database to recreate")
    parser.add_argument("--redis-url", default=REDIS_URL, help="the Redis db to flush and use")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the sandbox's line per request
    logs = Path(tempfile.mkdtemp(prefix="relay-bench-cold-"))
    print(f"logs in {logs}; load average {_load()}", flush=True)
    layouts = ["nodes", "procfile"] if args.layout == "both" else [args.layout]
    for layout in layouts:
        sandbox = serve_in_thread("127.0.0.1", 0, settings=SandboxSettings(request_log_size=100_000))
        (logs / layout).mkdir()
        try:
            with Processes(logs / layout) as processes:
                run(layout, processes, sandbox, args)
        finally:
            sandbox.stop()
    return 0


def run(layout: str, processes: Processes, sandbox, args) -> None:
    sandbox.configure(rate_limit={"sprig": {"limit": 1000, "window_s": 10}, "spruce": {"limit": 6000, "window_s": 60}})
    relay = Relay(processes, sandbox, args.database, args.redis_url,
                  SPRIG_RATE_LIMIT="1000/10s", SPRUCE_RATE_LIMIT="6000/60s")
    nodes = start_workers(relay, layout)
    started = time.monotonic()
    wait_until(lambda: all("ready." in _read(log) for log in nodes.values()), 60, "a worker did not say ready")
    ready_s = time.monotonic() - started
    cpu_before = sum(_tree_cpu_s(int(pid)) for pid in nodes)
    answered = post_steadily(relay.url, for_new_people("new_referral", args.events), args.rate)
    wait_until(lambda: relay.unfinished() == 0, 120, "not every event was done")
    busy_cpu_s = sum(_tree_cpu_s(int(pid)) for pid in nodes) - cpu_before
    first_call = first_sprig_calls(sandbox, args.events)
    first = min(answered.values())
    waits = {sub: first_call[sub] - at for sub, at in answered.items()}
    print(f"\n{layout}: {describe(layout)}; ready {ready_s:.1f} s after start; "
          f"{len(waits)} new_referral at {args.rate:g}/s; load average {_load()}")
    print(f"  200 -> first Sprig call: {_quantiles(sorted(waits.values()))}")
    print(f"    worker CPU from the first post until every event was done: {busy_cpu_s * 1000 / len(waits):.1f} ms "
          f"per webhook (2 deliveries; polled every 0.5 s: an upper bound)")
    published = sprig_published(relay)
    print(f"    of which 200 -> published (the Sprig delivery's enqueued_at): "
          f"{_quantiles(sorted(published[sub] - at for sub, at in answered.items()))}")
    print(f"    and published -> first Sprig call: "
          f"{_quantiles(sorted(first_call[sub] - published[sub] for sub in answered))}")
    buckets: dict[int, list[float]] = {}
    for sub, at in answered.items():
        buckets.setdefault(int(at - first), []).append(waits[sub])
    for second, bucket in sorted(buckets.items()):
        bucket.sort()
        print(f"  arrival second {second}: {len(bucket)} webhooks, p50 {_ms(_q(bucket, 0.5))}, "
              f"p99 {_ms(_q(bucket, 0.99))}, max {_ms(bucket[-1])}")
    time.sleep(2)  # the last round's effects over
    cpu = idle_cpu(nodes, args.idle_seconds)
    per_node = ", ".join(f"{name} {ms:.1f} ms/s" for name, ms in cpu.items())
    print(f"  idle worker CPU over {args.idle_seconds:g} s (each node's process tree): {per_node}; "
          f"total {sum(cpu.values()):.1f} ms/s; load average {_load()}", flush=True)


def describe(layout: str) -> str:
    if layout == "nodes":
        return "2 nodes of `celery -A workers worker --concurrency 2`"
    return f"one `relay worker --concurrency {WORKER_PROCESSES}`"


def start_workers(relay: Relay, layout: str) -> dict[str, Path]:
    """Start the layout's 4 worker processes; return each node's log, by the process tree's pid."""
    processes = relay.processes
    if layout == "nodes":
        started = {}
        for i in (1, 2):
            name = f"worker-{i}"
            process = processes.start(name, [sys.executable, "-m", "celery", "-A", "workers", "worker",
                                             "--loglevel", "INFO", "--concurrency", "2", "-n", f"bench{i}@%h"],
                                      relay.env)
            started[str(process.pid)] = processes.logs / f"{name}.log"
        return started
    relay_cli = str(Path(sys.executable).with_name("relay"))
    process = processes.start("worker", [relay_cli, "worker", "--loglevel", "INFO", "--concurrency",
                                         str(WORKER_PROCESSES)], relay.env)
    return {str(process.pid): processes.logs / "worker.log"}


def sprig_published(relay: Relay) -> dict[str, float]:
    """Per subscriber id, when a dispatcher published its Sprig delivery (epoch seconds)."""
    rows = relay._query("SELECT e.payload->'subscriber'->>'id', extract(epoch FROM d.enqueued_at) "
                        "FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.destination = 'sprig'")
    return {sub: float(at) for sub, at in rows}


def first_sprig_calls(sandbox, count: int) -> dict[str, float]:
    """Per subscriber id (bench.delivery.for_new_people's), when Sprig first heard of the
    webhook's people: the earlier of its two users' creation (epoch seconds)."""
    users = sandbox.state.snapshot()["sprig"]["users"]
    calls = {}
    for n in range(count):
        created = [users[email]["createdAt"] for email in (f"bench-{n}@example.com", f"referrer-{n}@example.com")
                   if email in users]
        if not created:
            raise SystemExit(f"benchmark stopped: no Sprig call for webhook {n}")
        calls[f"sub_bench_{n}"] = min(created) / 1000
    return calls


def idle_cpu(nodes: dict[str, Path], seconds: float) -> dict[str, float]:
    """CPU ms per second of each node's process tree (the node's process and its descendants)."""
    before = {pid: _tree_cpu_s(int(pid)) for pid in nodes}
    time.sleep(seconds)
    after = {pid: _tree_cpu_s(int(pid)) for pid in nodes}
    return {f"node {i + 1}": (after[pid] - before[pid]) / seconds * 1000 for i, pid in enumerate(nodes)}


def _tree_cpu_s(root: int) -> float:
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        ticks[int(entry)] = int(fields[11]) + int(fields[12])  # utime, stime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def _q(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


def _quantiles(waits: list[float]) -> str:
    q = statistics.quantiles(waits, n=100)
    return f"p50 {_ms(q[49])}, p90 {_ms(q[89])}, p99 {_ms(q[98])}, max {_ms(waits[-1])}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    raise SystemExit(main())
