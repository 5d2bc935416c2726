"""The Hold drill at the issue's size, as production runs: Spruce held while 50 webhooks come in
(10 subscribers, 5 each); `relay worker` as the Procfile runs it, twice, and beat; Relay's
default Spruce limit (50 calls a minute) and the sandbox's Spruce (100 a minute), so the
resumed backlog drains at the throttle's pace. Sprig gets every webhook while Spruce is held,
Spruce none; every process restarts and the hold stands; after `relay destinations resume
spruce` each reaches Spruce once, in the order it arrived for its subscriber. Prints what
`resume` estimated and how long the backlog took."""
from __future__ import annotations

import argparse
import shutil
import sys
import time

from bench.drills.harness import services
from testbed.drills.hold import hold_drill

NAME = "hold"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.drills.{NAME}", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--each", type=int, default=5, help="webhooks per subscriber")
    parser.add_argument("--spruce-rate", default="50/60s", help="Relay's SPRUCE_RATE_LIMIT")
    parser.add_argument("--sandbox-limit", type=int, default=100, help="the sandbox's Spruce calls a minute")
    parser.add_argument("--within", type=float, default=600, help="seconds for each phase (the drain above all)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs even when all is well")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with services(NAME) as (drill, sandbox, _, workdir):
        sandbox.configure(rate_limit={"spruce": {"limit": args.sandbox_limit, "window_s": 60}})
        seen = hold_drill(drill, sandbox, subscribers=args.subscribers, events_each=args.each, as_procfile=True,
                          within_s=args.within, SPRUCE_RATE_LIMIT=args.spruce_rate)
    throttled = sum(counts.get("429", 0) for counts in sandbox.stats().values())
    print(f"resume said: {' / '.join(seen.resume_output.strip().splitlines())}")
    print(f"{seen.line()}; Spruce 429s {throttled}; took {time.monotonic() - started:.0f} s", flush=True)
    arrived = list(range(1, args.each + 1))  # each subscriber's referral counts, in the order posted
    others = [counts for counts in seen.notes_in_order.values() if counts != arrived]
    in_order = len(seen.notes_in_order) - len(others)
    print(f"order of arrival: {in_order} of {args.subscribers} subscribers' notes all there, in order"
          f"{f'; the others hold {others}' if others else ''}", flush=True)
    ok = (
        in_order == args.subscribers
        and seen.sprig_done == seen.webhooks == seen.held_shown == seen.spruce_done
        and seen.spruce_calls_held == seen.spruce_calls_after_restart == seen.spruce_attempts_held == 0
        and seen.hold_after_restart
        and not seen.twice
        and not seen.dead
    )
    if ok and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs: {workdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
