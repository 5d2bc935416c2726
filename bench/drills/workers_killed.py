"""Workers SIGKILLed every few seconds during a run of several thousand events: three supervised
workers (`relay worker`, solo pool, so a kill lands mid-delivery); each kill takes one of them,
alternately its Celery process only (`relay worker` starts it again) or its whole machine (a new
worker is started). The kills go on for as long as the run lasts: while webhooks keep coming,
then until every event is finished or `--kill-after` has passed. The 2-core development machine
delivers about 6 events a second under the kills, so the default 3000 take about 8 minutes
(more when the machine is busy); `--events` makes it shorter."""
from __future__ import annotations

import sys

from bench.drills import harness
from testbed.drills.scenarios import killed_workers

NAME = "workers_killed"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__, events=3000, per_second=8, within=300, until="the last kill")
    parser.add_argument("--kill-every", type=float, default=3, help="seconds between kills")
    parser.add_argument("--kills", type=int, help="how many (default: for as long as the run lasts)")
    parser.add_argument("--workers", type=int, default=4, help="supervised solo workers")
    parser.add_argument("--latency-ms", type=int, default=20, help="Spruce's answer time")
    parser.add_argument("--kill-after", type=float, default=60,
                        help="seconds after the last webhook the kills stop at the latest")

    def scenario(drill, sandbox, redis_server, args):
        return killed_workers(drill, sandbox, subscribers=args.events, kill_every_s=args.kill_every, kills=args.kills,
                              per_second=args.per_second, latency_ms=args.latency_ms, workers=args.workers,
                              kill_after_s=args.kill_after, within_s=args.within)

    return harness.run(NAME, parser, scenario, argv)


if __name__ == "__main__":
    sys.exit(main())
