"""PostgreSQL restarted in the middle of a run: a loopback proxy in front of the machine's
PostgreSQL cuts every connection of the web, the workers and beat and refuses new ones for a
while, as a restart does. The web answers 503 while the store is away, the sender posts again
(every half second, as SparkLoop retries), and nothing accepted is lost."""
from __future__ import annotations

import sys

from bench.drills import harness
from testbed.drills.processes import TcpProxy
from testbed.drills.scenarios import postgres_restarted

NAME = "postgres_restarted"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__, events=300, until="it is back")
    parser.add_argument("--after", type=float, help="seconds into the stream PostgreSQL goes (default: half-way)")
    parser.add_argument("--down", type=float, default=15, help="seconds PostgreSQL stays away")

    def scenario(drill, sandbox, redis_server, args):
        after = harness.half_way(args)
        proxy = TcpProxy(harness.PG_PORT)
        try:
            return postgres_restarted(drill, sandbox, proxy, subscribers=args.events, down_s=args.down,
                                      after_s=after, per_second=args.per_second, within_s=args.within)
        finally:
            drill.stop()  # before the proxy: the processes' connections go through it
            proxy.stop()

    return harness.run(NAME, parser, scenario, argv)


if __name__ == "__main__":
    sys.exit(main())
