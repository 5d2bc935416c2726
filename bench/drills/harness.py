"""What every drill script shares: its options, its services and the line it ends with.

Each drill gets the sandbox (in this process), a PostgreSQL database of its own
(`relay_bench_drill_<name>`, recreated) and a redis-server of its own on a free loopback port,
keeping nothing on disk: the machine's Redis is never touched. The scenarios themselves are in
testbed/drills/, which the suite runs small (tests/test_drill_*.py).

A drill prints a line of details, then its summary line, and exits 1 when anything accepted was
lost or anything was done twice at a vendor (its process logs are then kept; their folder is
printed on stderr).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

from sandbox import RunningSandbox, SandboxSettings, serve_in_thread
from testbed.apps import fresh_services
from testbed.drills.processes import Drill, RedisServer
from testbed.drills.verdicts import Healed
from testbed.services import PG_URL, migrated_from_scratch

SERVER = PG_URL.rsplit("/", 1)[0]
PG_PORT = int(PG_URL.rsplit(":", 1)[1].split("/")[0])
# A scenario: (the drill, the sandbox, the drill's redis-server, the parsed options) -> what it measured.
Scenario = Callable[[Drill, RunningSandbox, RedisServer, argparse.Namespace], Healed]


def options(name: str, description: str, *, events: int, per_second: float = 10, within: float = 120,
            events_are: str = "reward_redeemed webhooks, one subscriber each",
            until: str = "the fault is over") -> argparse.ArgumentParser:
    """The options every drill has (the stream's size and pace, how long it may take to heal),
    with its own defaults; each drill adds those of its fault."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.drills.{name}", description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs even when all is well")
    parser.add_argument("--events", type=int, default=events, help=events_are)
    parser.add_argument("--per-second", type=float, default=per_second, help="webhooks a second")
    parser.add_argument("--within", type=float, default=within, help=f"seconds after {until} to finish")
    return parser


def half_way(args) -> float:
    """--after's default: the fault comes half-way through the stream."""
    return args.after if args.after is not None else args.events / args.per_second / 2


@contextmanager
def services(name: str) -> Iterator[tuple[Drill, RunningSandbox, RedisServer, Path]]:
    """The drill's sandbox, redis-server and database (`relay_bench_drill_<name>`, recreated) and
    its working folder, stopped when the block ends (the folder is the caller's to keep or not)."""
    for quiet in ("werkzeug", "relay"):  # the sandbox's request lines, the web's line per webhook
        logging.getLogger(quiet).setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix=f"relay-drill-{name}-"))
    sandbox = serve_in_thread("127.0.0.1", 0, settings=SandboxSettings())
    redis_server = RedisServer(workdir)
    redis_server.start()
    database = migrated_from_scratch(f"{SERVER}/relay_bench_drill_{name}")
    drill = Drill(fresh_services(database, redis_server.url, sandbox, workdir / "instance"), workdir)
    try:
        yield drill, sandbox, redis_server, workdir
    finally:
        drill.stop()
        redis_server.stop()
        sandbox.stop()


def run(name: str, parser: argparse.ArgumentParser, scenario: Scenario, argv: list[str] | None = None) -> int:
    args = parser.parse_args(argv)
    started = time.monotonic()
    with services(name) as (drill, sandbox, redis_server, workdir):
        healed = scenario(drill, sandbox, redis_server, args)
    print(details(name, healed, time.monotonic() - started), flush=True)
    print(healed.tally.line(name), flush=True)
    if healed.tally.ok and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs: {workdir}", file=sys.stderr)
    return 0 if healed.tally.ok else 1


def details(name: str, healed: Healed, took_s: float) -> str:
    heal = (f"all done {healed.healed_s:.1f} s after the fault ended" if healed.healed_s is not None
            else "NOT all done when the drill ended")
    return (f"{name}: {healed.events} events stored, {heal}; webhook answers {healed.answers}, "
            f"posted again {healed.retried}; delivery runs that failed {healed.failed_attempts}, that waited "
            f"{healed.deferrals}; deliveries that waited for a lease {healed.lease_waits}; vendor answers "
            f"{healed.vendor_answers}; vendor records not one per subscriber: {healed.duplicates or 'none'}; "
            f"dead processes {healed.dead or 'none'}; "
            f"took {took_s:.0f} s")
