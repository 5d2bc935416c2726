"""A vendor slower than Relay's client timeout: for a while each request waits before the vendor
handles it, longer than RELAY_VENDOR_TIMEOUT_S; Relay gives up on the call and the request lands
afterwards, unanswered. Retries must find what landed (Spruce's idempotency keys and searches,
Sprig's read-back of its event) instead of doing it again. Two supervised workers (Procfile
settings) and beat."""
from __future__ import annotations

import sys

from bench.drills import harness
from testbed.drills.scenarios import slow_vendor

NAME = "slow_vendor"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__, events=400, until="they are fast again")
    parser.add_argument("--vendors", default="sprig,spruce", help="which vendors are slow")
    parser.add_argument("--timeout", type=int, default=1, help="RELAY_VENDOR_TIMEOUT_S, seconds")
    parser.add_argument("--latency-ms", type=int, help="the slow vendors' answer time (default: 1.5 x the timeout)")
    parser.add_argument("--after", type=float, default=5, help="seconds after the first event is done")
    parser.add_argument("--slow", type=float, default=30, help="seconds the vendors are slow")
    parser.add_argument("--flap", type=float, help="slow and fast by turns, this many seconds each (default: slow throughout)")

    def scenario(drill, sandbox, redis_server, args):
        return slow_vendor(drill, sandbox, subscribers=args.events, slow_s=args.slow, after_s=args.after,
                           timeout_s=args.timeout, latency_ms=args.latency_ms, vendors=tuple(args.vendors.split(",")),
                           per_second=args.per_second, flap_s=args.flap, within_s=args.within)

    return harness.run(NAME, parser, scenario, argv)


if __name__ == "__main__":
    sys.exit(main())
