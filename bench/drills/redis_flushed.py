"""Redis restarted with its data gone in the middle of a run: the drill's own redis-server is
killed and started again empty (nothing on disk) while webhooks keep coming; the vendors'
limits are low enough (Sprig 8/s, Spruce 40/s) that deliveries wait for throttle slots, so
workers hold messages with a countdown when Redis goes. Two supervised workers (Procfile
settings) and beat."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.drills import harness  # noqa: E402
from tests.drills import redis_restarted_empty  # noqa: E402

NAME = "redis_flushed"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__)
    parser.add_argument("--events", type=int, default=300, help="reward_redeemed webhooks, one subscriber each")
    parser.add_argument("--per-second", type=float, default=10, help="webhooks a second")
    parser.add_argument("--after", type=float, help="seconds into the stream Redis dies (default: half-way)")
    parser.add_argument("--down", type=float, default=5, help="seconds Redis stays down")
    parser.add_argument("--within", type=float, default=120, help="seconds after Redis is back to finish")

    def scenario(drill, sandbox, redis_server, args):
        after = args.after if args.after is not None else args.events / args.per_second / 2
        return redis_restarted_empty(drill, sandbox, redis_server, subscribers=args.events, down_s=args.down,
                                     after_s=after, per_second=args.per_second, within_s=args.within)

    return harness.run(NAME, parser, scenario, argv)


if __name__ == "__main__":
    sys.exit(main())
