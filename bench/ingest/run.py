"""Webhook intake throughput: Relay against a bare Flask app, same gunicorn settings.

    python -m bench.ingest.run [--duration 15] [--connections 16] [--threads 2] [--rounds 2]

Both apps run under gunicorn with the Procfile's settings (gunicorn.conf.py: WEB_CONCURRENCY=2
processes), one after the other, alternating for --rounds rounds; wrk posts a new_referral for
a new subscriber with every request (unique.lua). Relay runs on PostgreSQL (it recreates the
database relay_bench_ingest) and Redis (it flushes db 14), with both vendors configured, so
every webhook stores an event and two deliveries and enqueues them; no worker runs, so what is
measured is the intake alone. Prints req/s, p50 and p99 latency and non-2xx answers per run,
and Relay / bare per round. Needs wrk (Debian's package) on the PATH.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from testbed.services import PG_URL, migrated_from_scratch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

REDIS_URL = "redis://127.0.0.1:6379/14"


def serve(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", app, "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{app} did not start: see {log}")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def wrk(port: int, args) -> dict:
    output = subprocess.run(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s", "--latency",
         "-s", str(HERE / "unique.lua"), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True).stdout
    return {
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
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    database = migrated_from_scratch(f"{PG_URL.rsplit('/', 1)[0]}/relay_bench_ingest")
    logs = Path(tempfile.mkdtemp(prefix="relay-bench-ingest-"))
    relay_env = {
        "DATABASE_URL": database, "REDIS_URL": REDIS_URL, "SPARKLOOP_WEBHOOK_TOKEN": "bench-token",
        "SPRIG_API_KEY": "bench", "SPRUCE_API_TOKEN": "bench", "LOG_FORMAT": "json", "WEB_CONCURRENCY": "2",
    }
    bare_env = {"PYTHONPATH": str(HERE), "LOG_FORMAT": "json", "WEB_CONCURRENCY": "2"}
    port = 18100
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, gunicorn.conf.py with 2 processes; "
          f"logs in {logs}")
    for round_ in range(1, args.rounds + 1):
        results = {}
        for name, app, env in (("bare", "bare_app:app", bare_env), ("relay", "web:create_app()", relay_env)):
            redis.Redis.from_url(REDIS_URL).flushdb()
            process = serve(app, port, env, logs / f"{name}-{round_}.log")
            try:
                results[name] = wrk(port, args)
            finally:
                stop(process)
            r = results[name]
            print(f"round {round_} {name:5}: {r['rps']:8.0f} req/s  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms"
                  f"  non-2xx {r['non_2xx']}")
        print(f"round {round_} relay / bare: {results['relay']['rps'] / results['bare']['rps']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
