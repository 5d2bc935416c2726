"""429 storms with Retry-After: every few seconds, for a few seconds, both vendors answer every
request 429 with a Retry-After, however slowly Relay calls them. A 429 defers its delivery to
the time the vendor named (no attempt spent) and pushes every worker's next slot for that
vendor, so the storms cost few 429s. Two supervised workers (Procfile settings) and beat."""
from __future__ import annotations

import sys

from bench.drills import harness
from testbed.drills.scenarios import rate_limit_storm

NAME = "rate_limit_storm"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__, events=600, until="the last storm")
    parser.add_argument("--storms", type=int, default=6)
    parser.add_argument("--storm", type=float, default=4, help="seconds each storm lasts")
    parser.add_argument("--every", type=float, default=10, help="seconds from one storm to the next")
    parser.add_argument("--retry-after", type=int, default=2, help="the 429s' Retry-After, seconds")

    def scenario(drill, sandbox, redis_server, args):
        return rate_limit_storm(drill, sandbox, subscribers=args.events, storms=args.storms, storm_s=args.storm,
                                every_s=args.every, retry_after_s=args.retry_after, per_second=args.per_second,
                                within_s=args.within)

    return harness.run(NAME, parser, scenario, argv)


if __name__ == "__main__":
    sys.exit(main())
