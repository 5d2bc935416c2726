"""A vendor down for a minute: it answers every request 503 (no Retry-After: an outage, not a
throttle) while webhooks keep coming. Its deliveries are retried with backoff and its breaker
opens (Relay's default 30 s cooldown); the other vendor's deliveries go on. Two supervised
workers (Procfile settings) and beat; RELAY_RETRY_BASE_S=1 as in the suite."""
from __future__ import annotations

import sys

from bench.drills import harness
from testbed.drills.scenarios import vendor_down

NAME = "vendor_down"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__, events=900, within=180, until="it is back")
    parser.add_argument("--vendor", choices=("spruce", "sprig"), default="spruce", help="the vendor that goes down")
    parser.add_argument("--after", type=float, default=10, help="seconds after the first event is done")
    parser.add_argument("--down", type=float, default=60, help="seconds the vendor is down")

    def scenario(drill, sandbox, redis_server, args):
        return vendor_down(drill, sandbox, subscribers=args.events, down_s=args.down, after_s=args.after,
                           vendor=args.vendor, per_second=args.per_second, within_s=args.within)

    return harness.run(NAME, parser, scenario, argv)


if __name__ == "__main__":
    sys.exit(main())
