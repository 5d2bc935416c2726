"""Redis restarted with its data gone in the middle of a run: the drill's own redis-server is
killed and started again empty (nothing on disk) while webhooks keep coming; the vendors'
limits are low enough (Sprig 8/s, Spruce 40/s) that deliveries wait for throttle slots, so
messages are queued and in flight when Redis goes. Two supervised workers (Procfile
settings) and beat."""
from __future__ import annotations

import sys

from bench.drills import harness
from testbed.drills.scenarios import redis_restarted_empty

NAME = "redis_flushed"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__, events=300, until="Redis is back")
    parser.add_argument("--after", type=float, help="seconds into the stream Redis dies (default: half-way)")
    parser.add_argument("--down", type=float, default=5, help="seconds Redis stays down")

    def scenario(drill, sandbox, redis_server, args):
        after = harness.half_way(args)
        return redis_restarted_empty(drill, sandbox, redis_server, subscribers=args.events, down_s=args.down,
                                     after_s=after, per_second=args.per_second, within_s=args.within)

    return harness.run(NAME, parser, scenario, argv)


if __name__ == "__main__":
    sys.exit(main())
