"""Webhook intake throughput: Relay against two references, same gunicorn settings, same run.

    python -m bench.ingest.run [--duration 15] [--connections 16] [--threads 2] [--rounds 3]
                               [--before CHECKOUT] [--redis-url URL] [--database NAME]

The references: `bare` (bare_app.py) answers 200 and does nothing else; `bare+insert`
(bare_insert_app.py) parses the JSON and inserts it with a de-duplication key, one prepared
statement in autocommit with PostgreSQL's default commit: the least any durable intake does.
`relay` is this checkout's web; with --before, `before` is another checkout's (an older commit
extracted with `git archive`), served from its own folder with this checkout's virtualenv, so
a change is measured beside what it changes in the same run.

Every app runs under gunicorn with the Procfile's settings (gunicorn.conf.py: WEB_CONCURRENCY=2
sync processes), one after the other, in an order that turns (and reverses) each round; wrk
posts a new_referral for a new subscriber with every request (unique.lua). All run on
PostgreSQL (the database relay_bench_ingest, recreated; its tables emptied and a checkpoint
taken before every run) and Relay on Redis too (--redis-url; that db flushed), with both
vendors configured, so every webhook stores an event, two deliveries and its subject digests;
no worker runs, so what is measured is the intake alone. Prints per run req/s, p50 and p99
latency, non-2xx answers and the app's CPU time per request (its gunicorn processes', from
/proc), and per round Relay's ratios to the references (and to `before`), by req/s and by CPU
per request, with their medians at the end. Needs wrk (Debian's package).
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

from testbed.services import PG_URL, migrated_from_scratch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

BARE_TABLE = """
CREATE TABLE IF NOT EXISTS bare_events (
    id bigserial PRIMARY KEY,
    dedup_key text NOT NULL UNIQUE,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)"""
EMPTY = "TRUNCATE events, deliveries, event_subjects, bare_events RESTART IDENTITY CASCADE"


def serve(app: str, port: int, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", app, "-c", str(cwd / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}"],
            cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    stop(process)
    raise SystemExit(f"{app} did not start: see {log}")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def cpu_seconds(group: int) -> float:
    """User and system CPU time of the processes in process group `group` (gunicorn's master and
    its workers), from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # a process that ended meanwhile
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(port: int, args) -> dict:
    output = subprocess.run(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s", "--latency",
         "-s", str(HERE / "unique.lua"), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True, timeout=args.duration + 60).stdout
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": _latency(output, "50%"), "p99": _latency(output, "99%"),
        "non_2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0,
    }


def _latency(output: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", output).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout of Relay, served as `before`")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--port", type=int, default=18100)
    parser.add_argument("--apps", default="bare,bare+insert,relay,before", help="which of them to run")
    parser.add_argument("--database", default="relay_bench_ingest", help="recreated (a name each for runs side by side)")
    args = parser.parse_args()

    database = migrated_from_scratch(f"{PG_URL.rsplit('/', 1)[0]}/{args.database}")
    engine = sa.create_engine(database, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(BARE_TABLE)
    logs = Path(tempfile.mkdtemp(prefix="relay-bench-ingest-"))
    relay_env = {
        "DATABASE_URL": database, "REDIS_URL": args.redis_url, "SPARKLOOP_WEBHOOK_TOKEN": "bench-token",
        "SPRIG_API_KEY": "bench", "SPRUCE_API_TOKEN": "bench", "LOG_FORMAT": "json", "WEB_CONCURRENCY": "2",
    }
    bare_env = {"PYTHONPATH": str(HERE), "LOG_FORMAT": "json", "WEB_CONCURRENCY": "2",
                "BARE_DATABASE_URL": database.replace("postgresql+psycopg://", "postgresql://")}
    apps = [("bare", "bare_app:app", ROOT, bare_env), ("bare+insert", "bare_insert_app:app", ROOT, bare_env),
            ("relay", "web:create_app()", ROOT, {**relay_env, "PYTHONPATH": str(ROOT)})]
    if args.before:
        before = args.before.resolve()
        apps.append(("before", "web:create_app()", before, {**relay_env, "PYTHONPATH": str(before)}))
    apps = [app for app in apps if app[0] in args.apps.split(",")]
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, gunicorn.conf.py with 2 processes; "
          f"logs in {logs}")
    ratios: dict[str, list[float]] = {}
    for round_ in range(1, args.rounds + 1):
        results = {}
        turn = (round_ - 1) % len(apps)
        order = apps[turn:] + apps[:turn]
        if round_ % 2 == 0:  # no app always runs right after the same one
            order.reverse()
        for name, app, cwd, env in order:
            with engine.connect() as conn:
                conn.exec_driver_sql(EMPTY)
                # The previous run's writes on disk now, not in a checkpoint during this run.
                conn.exec_driver_sql("CHECKPOINT")
            redis.Redis.from_url(args.redis_url).flushdb()
            process = serve(app, args.port, cwd, env, logs / f"{name}-{round_}.log")
            try:
                cpu = cpu_seconds(process.pid)
                results[name] = r = wrk(args.port, args)
                r["cpu_ms"] = (cpu_seconds(process.pid) - cpu) * 1000 / r["requests"]
            finally:
                stop(process)
            print(f"round {round_} {name:11}: {r['rps']:8.0f} req/s  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms"
                  f"  non-2xx {r['non_2xx']}  CPU {r['cpu_ms']:.2f} ms/request", flush=True)
        for relay in ("relay", "before"):
            for reference in ("bare", "bare+insert"):
                if relay in results and reference in results:
                    _ratio(ratios, round_, f"{relay} / {reference}", results[relay], results[reference])
        if "before" in results and "relay" in results:
            _ratio(ratios, round_, "relay / before", results["relay"], results["before"])
    print("medians of the rounds: req/s ratio (CPU per request, inverse ratio)")
    for name, values in ratios.items():
        print(f"  {name:20}: {statistics.median(v for v, _ in values):.2f} "
              f"({statistics.median(c for _, c in values):.2f})")
    engine.dispose()
    return 0


def _ratio(ratios: dict, round_: int, name: str, app: dict, reference: dict) -> None:
    """Throughput of `app` over `reference`'s, and the same measured by CPU: the reference's CPU
    time per request over the app's (the wrk runs are one after the other and the machine's load
    changes between them; CPU per request changes less)."""
    by_rate, by_cpu = app["rps"] / reference["rps"], reference["cpu_ms"] / app["cpu_ms"]
    ratios.setdefault(name, []).append((by_rate, by_cpu))
    print(f"round {round_} {name}: {by_rate:.2f} (by CPU per request {by_cpu:.2f})")


if __name__ == "__main__":
    sys.exit(main())
