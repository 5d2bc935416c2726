"""The Budget drill (issue 19): the sandbox's Spruce allows 240 calls a minute and 400 a "day" of
120 s, and another integration of the clinic spends one every 2 s of the same budget. 300 Spruce
deliveries that failed earlier (a note Spruce refused) are replayed (catch-up) while live webhooks
arrive at 1 a second for two and a half minutes, past the first turn of the day. Relay is told
Spruce's minute limit (SPRUCE_RATE_LIMIT=240/60s); two supervised workers (Procfile settings)
and beat.

The reserves at their defaults (catch-up 25%, live 2%); RELAY_PARK_PROBE (--park-probe) shorter
than the drill's day, as the default (5m) outlasts it.

Live webhooks (--live): `note`, a reward note for a subscriber whose Spruce contact and note
conversation Relay knows (one Spruce call each), or `referral`, a new subscriber's referral (two:
search, create the contact). It prints the figures, then each criterion of the issue with its
verdict, and exits 1 when one fails (testbed.drills.budget.criteria): live webhooks all done at
Spruce within 10 s of their 200; the replay parked on the day's catch-up reserve and finished
after the day turned; 0 Spruce 429s; the daily remaining never below the live reserve after a
call of Relay's; everything done by the end, nothing twice.
"""

from __future__ import annotations

import shutil
import sys

from bench.drills import harness
from testbed.drills.budget import LIVE_KINDS, BudgetRun, budget_drill, criteria, reserve_calls

NAME = "budget"


def main(argv: list[str] | None = None) -> int:
    parser = harness.options(NAME, __doc__, events=150, per_second=1, within=60,
                             events_are="live webhooks", until="the last live webhook")
    parser.add_argument("--replays", type=int, default=300, help="earlier failed Spruce deliveries replayed")
    parser.add_argument("--live", choices=LIVE_KINDS, default="note", help="what the live webhooks are")
    parser.add_argument("--limit", type=int, default=240, help="Spruce's calls a minute (and SPRUCE_RATE_LIMIT's)")
    parser.add_argument("--daily-limit", type=int, default=400, help="Spruce's calls a day")
    parser.add_argument("--day", type=float, default=120, help="the day's length, seconds")
    parser.add_argument("--other-every", type=float, default=2, help="the other integration's pace, seconds a call")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--live-within", type=float, default=10, help="seconds a live webhook may take to Spruce")
    parser.add_argument("--live-reserve", type=float, default=0.02,
                        help="the live reserve's share of the daily limit (RELAY_RESERVE_LIVE's default)")
    parser.add_argument("--catch-up-reserve", type=float, default=0.25,
                        help="the catch-up reserve's share of the daily limit (RELAY_RESERVE_CATCH_UP's default)")
    parser.add_argument("--park-probe", default="20s", help="RELAY_PARK_PROBE")
    args = parser.parse_args(argv)
    with harness.services(NAME) as (drill, sandbox, _, workdir):
        run = budget_drill(drill, sandbox, replays=args.replays, live=args.events, per_second=args.per_second,
                           limit=args.limit, daily_limit=args.daily_limit, day_s=args.day,
                           other_every_s=args.other_every, live_kind=args.live, workers=args.workers,
                           within_s=args.within, RELAY_PARK_PROBE=args.park_probe)

    print(figures(run, args.live_within), flush=True)
    verdicts = criteria(run, args.live_within, reserve_calls(args.live_reserve, args.daily_limit),
                        reserve_calls(args.catch_up_reserve, args.daily_limit))
    for name, (passed, shown) in verdicts.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {shown}", flush=True)
    print(summary(run, args.live_within), flush=True)
    failed = not all(passed for passed, _ in verdicts.values())
    if failed or args.keep_logs:
        print(f"logs: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def figures(run: BudgetRun, live_within: float) -> str:
    slowest = f"{run.slowest_s:.1f} s" if run.slowest_s is not None else "none reached"
    finished = (f"the last done {run.replay_finished_s:.0f} s into the drill" if run.replay_finished_s is not None
                else "not all done when the drill ended")
    waiting = (f", the longest still waiting {run.longest_wait_left_s:.0f} s more"
               if run.longest_wait_left_s is not None else "")
    days = "; ".join(
        f"day {n}: Relay {d['relay']}, other {d['other']}, refused to Relay {d['relay_refused']}, "
        f"lowest remaining {d['lowest_remaining']}" for n, d in enumerate(run.days, 1))
    return "\n".join([
        f"{NAME}: live {run.live_kind} webhooks: {run.live_posted} posted, {run.live_accepted} answered 200; "
        f"{run.within(live_within)} done at Spruce within {live_within:g} s of their 200, slowest {slowest}, "
        f"{run.live_unreached} not done when the drill ended",
        f"{NAME}: replay: {run.replayed} Spruce deliveries, {run.replayed_done} done, {finished} "
        f"(days of {run.day_s:g} s)",
        f"{NAME}: Spruce answered 429 {run.spruce_429s} times; lowest daily remaining "
        f"{run.lowest_daily_remaining} (after a call of Relay's: {run.lowest_daily_remaining_after_relay}); "
        f"calls counted: Relay {run.relay_calls}, the other integration {run.other_calls}",
        f"{NAME}: {days}",
        f"{NAME}: not done when the drill ended: {run.unfinished} (Spruce deliveries by status: "
        f"{run.unfinished_statuses or 'none'}{waiting}); done twice: {run.duplicates}",
        f"{NAME}: vendor answers {run.vendor_answers}; took {run.took_s:.0f} s",
    ])


def summary(run: BudgetRun, live_within: float) -> str:
    slowest = f"{run.slowest_s:.0f} s" if run.slowest_s is not None else "-"
    return (f"drill {NAME}: live {run.within(live_within)}/{run.live_posted} within {live_within:g} s "
            f"(slowest {slowest}, {run.live_unreached} not done), replay {run.replayed_done}/{run.replayed}, "
            f"429s {run.spruce_429s}, lowest daily remaining {run.lowest_daily_remaining} "
            f"(after Relay {run.lowest_daily_remaining_after_relay}), not done {run.unfinished}, "
            f"duplicates {run.duplicates}")


if __name__ == "__main__":
    sys.exit(main())
