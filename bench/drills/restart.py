"""Rolling restarts under load (a deploy, several times): a new gunicorn web (gunicorn.conf.py)
takes the traffic and the old one gets SIGTERM, finishing what it is answering; a new
`relay worker` starts and an old one gets SIGTERM, finishing its deliveries within
RELAY_SHUTDOWN_GRACE or handing them back (Spruce answers in 150 ms, so the SIGTERMs land
mid-delivery). No webhook goes unanswered and no delivery waits for a lease."""
from __future__ import annotations

import sys

from bench.drills import harness
from testbed.drills.scenarios import rolling_restart

NAME = "restart"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__, events=300, until="the last restart")
    parser.add_argument("--restarts", type=int, default=6)
    parser.add_argument("--every", type=float, default=4, help="seconds between restarts")

    def scenario(drill, sandbox, redis_server, args):
        return rolling_restart(drill, sandbox, subscribers=args.events, restarts=args.restarts, every_s=args.every,
                               per_second=args.per_second, within_s=args.within)

    return harness.run(NAME, parser, scenario, argv)


if __name__ == "__main__":
    sys.exit(main())
