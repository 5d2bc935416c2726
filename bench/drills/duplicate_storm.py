"""Duplicate storms: SparkLoop sends every webhook three times, over HTTP to gunicorn as the
Procfile runs it: every other webhook with its three copies at the same moment (the web
processes race on its key), the others once and again 1 s and 5 s later (while its deliveries
run, or after they are done). Every copy is answered 200; each event is stored once and
delivered once. Two supervised workers (Procfile settings) and beat."""
from __future__ import annotations

import sys

from bench.drills import harness
from testbed.drills.scenarios import duplicate_storm

NAME = "duplicate_storm"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__, events=1000, events_are="distinct reward_redeemed webhooks",
                             until="the last copy")
    parser.add_argument("--copies", type=int, default=3, help="times each is sent (at most 3)")
    parser.add_argument("--web-concurrency", type=int, default=2, help="gunicorn processes")

    def scenario(drill, sandbox, redis_server, args):
        return duplicate_storm(drill, sandbox, subscribers=args.events, copies=args.copies,
                               per_second=args.per_second, web_concurrency=args.web_concurrency, within_s=args.within)

    return harness.run(NAME, parser, scenario, argv)


if __name__ == "__main__":
    sys.exit(main())
