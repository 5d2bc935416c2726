"""Memory per process, as a deploy runs them: the Procfile's web (gunicorn, gunicorn.conf.py)
and worker (`relay worker --concurrency N`), after they have taken traffic.

    python -m bench.footprint [--concurrency 2] [--webhooks 300]

Posts `--webhooks` new_referral webhooks (Sprig and Spruce, each for new people) at 50/s, waits
until every event is done, then reads each process of the web's and the worker's trees from
/proc: RSS (what a PaaS such as Heroku counts against a dyno's memory) and PSS (the pages a
forked process shares with its parent counted once). Needs the machine's PostgreSQL (it
recreates relay_bench_delivery) and Redis (db 14), like bench/delivery.py, whose processes it
reuses.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.delivery import Relay, for_new_people, post_steadily
from bench.throttle import Processes, wait_until
from sandbox import SandboxSettings, serve_in_thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=2, help="the worker's pool processes")
    parser.add_argument("--webhooks", type=int, default=300)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="relay-bench-footprint-"))
    sandbox = serve_in_thread("127.0.0.1", 0, settings=SandboxSettings(request_log_size=100_000))
    sandbox.configure(rate_limit={"sprig": {"limit": 1_000_000}, "spruce": {"limit": 1_000_000}})
    try:
        with Processes(logs) as processes:
            relay = Relay(processes, sandbox, SPRIG_RATE_LIMIT="100000/1s", SPRUCE_RATE_LIMIT="100000/1s")
            relay.start_worker(args.concurrency)
            post_steadily(relay.url, for_new_people("new_referral", args.webhooks), 50)
            wait_until(lambda: relay.unfinished() == 0, 600, "not every event was done")
            calls = {vendor: sum(by_status.values()) for vendor, by_status in sandbox.state.stats().items()}
            print("vendor calls per webhook: "
                  + ", ".join(f"{vendor} {n / args.webhooks:.1f}" for vendor, n in sorted(calls.items())))
            for name, process in processes.started.items():
                if name in ("web", "worker"):
                    print(f"{name} (pid {process.pid} and its children), after {args.webhooks} webhooks:")
                    for pid, command in tree(process.pid):
                        rss, pss = memory_kib(pid)
                        print(f"  {pid:>7} RSS {rss / 1024:6.1f} MiB  PSS {pss / 1024:6.1f} MiB  {command}")
    finally:
        sandbox.stop()
    return 0


def tree(root: int) -> list[tuple[int, str]]:
    """`root` and its descendants: (pid, command line), parents first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
        except OSError:  # ended meanwhile
            continue
        children.setdefault(int(rest.rsplit(")", 1)[1].split()[1]), []).append(int(pid))
    found, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
        found.append((pid, command))
        todo += sorted(children.get(pid, []))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of the process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])


if __name__ == "__main__":
    raise SystemExit(main())
