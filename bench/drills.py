"""The fault drills at the size of the incidents they stand for (the suite runs them small):

- workers: 300 events; a worker dies every 3 s for 45 s (its process killed, or its machine);
- redis: 120 events at 10/s; Redis restarts empty, down 5 s;
- postgres: 120 events at 10/s; PostgreSQL away for 15 s;
- restart: 300 events at 10/s; a rolling deploy every 4 s, 6 times (a new gunicorn web takes
  the traffic, the old one gets SIGTERM; a new supervised worker starts, an old one gets SIGTERM).

    python bench/drills.py [workers redis postgres restart]

Prints, per drill, how long after the fault's end every event was done, the webhook answers,
anything duplicated at the vendors and any process that died. Needs the machine's PostgreSQL
(it recreates relay_bench_drill_*), Redis (it flushes dbs 14, 5 and 3) and redis-server.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox import SandboxSettings, serve_in_thread  # noqa: E402
from tests.conftest import PG_URL, fresh_services, migrated_from_scratch  # noqa: E402
from tests.drills import (  # noqa: E402
    HEAL_WITHIN_S, Drill, RedisServer, TcpProxy, killed_workers, postgres_restarted, redis_restarted_empty,
    rolling_restart,
)

SERVER = PG_URL.rsplit("/", 1)[0]


def main(names: list[str]) -> int:
    sandbox = serve_in_thread("127.0.0.1", 0, settings=SandboxSettings())
    workdir = Path(tempfile.mkdtemp(prefix="relay-drills-"))
    failed = 0
    try:
        for name in names or ["workers", "redis", "postgres", "restart"]:
            failed += run(name, sandbox, workdir / name)
    finally:
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def run(name: str, sandbox, workdir: Path) -> int:
    workdir.mkdir(parents=True)
    database = migrated_from_scratch(f"{SERVER}/relay_bench_drill_{name}")
    helpers = []
    if name == "redis":
        helpers.append(RedisServer(workdir))
        helpers[0].start()
        redis_url = helpers[0].url
    else:
        redis_url = f"redis://127.0.0.1:6379/{ {'workers': 14, 'restart': 3}.get(name, 5)}"
    drill = Drill(fresh_services(database, redis_url, sandbox, workdir / "instance"), workdir)
    try:
        if name == "workers":
            healed = killed_workers(drill, sandbox, subscribers=300, kill_every_s=3, kills=15)
        elif name == "restart":
            healed = rolling_restart(drill, sandbox, subscribers=300, restarts=6, every_s=4)
        elif name == "redis":
            healed = redis_restarted_empty(drill, sandbox, helpers[0], subscribers=120, down_s=5)
        else:
            helpers.append(TcpProxy(int(PG_URL.rsplit(":", 1)[1].split("/")[0])))
            healed = postgres_restarted(drill, sandbox, helpers[-1], subscribers=120, down_s=15)
    finally:
        drill.stop()
        for helper in helpers:
            helper.stop()
    ok = (healed.healed_s is not None and healed.healed_s <= HEAL_WITHIN_S and not healed.duplicates
          and not healed.dead and (name != "restart" or (healed.retried == 0 and healed.lease_waits == 0)))
    heal = f"{healed.healed_s:.1f} s" if healed.healed_s is not None else f"not within {HEAL_WITHIN_S:.0f} s"
    print(f"{name}: {healed.events} events, all done {heal} after the fault ended; answers {healed.answers}; "
          f"duplicates {healed.duplicates or 'none'}; dead processes {healed.dead or 'none'}; "
          f"webhooks posted again {healed.retried}; deliveries that waited for a lease {healed.lease_waits}"
          + ("" if ok else "  <-- FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
