"""The Alerts drill (issue 19) at full size, as production runs it: a supervised worker and beat,
beat's alert check every 30 s (--check-every to have the drill send beat's task more often),
the breaker's production cool-down (30 s), RELAY_ALERT_BACKLOG_AGE 1m, 100 webhooks while
Sprig is down. A loopback Standard Webhooks receiver and a Slack stand-in get the held, breaker,
backlog-age and daily-budget (80%) alerts (testbed/drills/alerts.py has the phases).

Prints when each alert reached the webhook sink, counted from the moment its condition began
(opened) or ended (resolved), then each criterion with its verdict, and exits 1 when one fails:
each alert opened once and resolved once at both sinks; every webhook's Standard Webhooks
signature valid; every Slack body one line with a link to the console; no personal value of the
webhooks posted in any body."""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from standardwebhooks.webhooks import Webhook

from bench.drills.harness import services
from testbed.alert_sinks import WEBHOOK_SECRET
from testbed.drills.alerts import EXPECTED, PUBLIC_URL, AlertsRun, alerts_drill
from testbed.privacy import leaked

NAME = "alerts"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.drills.{NAME}", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100, help="webhooks posted while Sprig is down")
    parser.add_argument("--check-every", type=float, default=None,
                        help="seconds between the drill's own alert checks (default: beat's alone, every 30 s)")
    parser.add_argument("--backlog-age", default="1m", help="RELAY_ALERT_BACKLOG_AGE")
    parser.add_argument("--cooldown", default="30s", help="RELAY_BREAKER_COOLDOWN")
    parser.add_argument("--within", type=float, default=180, help="seconds each alert may take to arrive")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs even when all is well")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with services(NAME) as (drill, sandbox, _, workdir):
        run = alerts_drill(drill, sandbox, subscribers=args.subscribers, check_every_s=args.check_every,
                           backlog_age=args.backlog_age, cooldown=args.cooldown, within_s=args.within,
                           settle_s=5)
    print(figures(run), flush=True)
    verdicts = criteria(run)
    for name, (passed, shown) in verdicts.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {shown}", flush=True)
    ok = all(passed for passed, _ in verdicts.values())
    print(f"drill {NAME}: {len(run.webhook)} alerts at the webhook, {len(run.slack)} at Slack, "
          f"{sum(passed for passed, _ in verdicts.values())} of {len(verdicts)} criteria passed; "
          f"took {time.monotonic() - started:.0f} s", flush=True)
    if ok and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs: {workdir}", file=sys.stderr)
    return 0 if ok else 1


def figures(run: AlertsRun) -> str:
    lines = []
    for alert_type, subject in EXPECTED:
        delays = []
        for status in ("opened", "resolved"):
            delay = run.delay_s(alert_type, status)
            delays.append(f"{status} {delay:.1f} s after" if delay is not None else f"no {status}")
        lines.append(f"{NAME}: {alert_type} ({subject}): {', '.join(delays)}")
    return "\n".join(lines)


def criteria(run: AlertsRun) -> dict[str, tuple[bool, str]]:
    statuses = run.statuses()
    verifier = Webhook(WEBHOOK_SECRET)
    unsigned = 0
    for post in run.webhook:
        try:
            verifier.verify(post.body, post.headers)
        except Exception:  # the package raises its own WebhookVerificationError
            unsigned += 1
    lines = [post.json["text"] for post in run.slack]
    linked = [line for line in lines if "\n" not in line and f"<{PUBLIC_URL}/console/" in line]
    everything = "\n".join(post.body.decode() for post in run.webhook + run.slack)
    found = sorted(value for value in run.personal if leaked(value, everything))
    return {
        "each alert opened once and resolved once, at both sinks": (
            set(EXPECTED) <= set(statuses) and all(each == ["opened", "resolved"] for each in statuses.values())
            and {alert_type for alert_type, _ in statuses} == {alert_type for alert_type, _ in EXPECTED}
            and len(run.slack) == len(run.webhook),
            f"{len(run.webhook)} at the webhook, {len(run.slack)} at Slack: {run.alerts()}",
        ),
        "every webhook signed (Standard Webhooks)": (unsigned == 0 and bool(run.webhook),
                                                      f"{len(run.webhook) - unsigned} of {len(run.webhook)}"),
        "every Slack body one line with a console link": (len(linked) == len(lines) > 0,
                                                          f"{len(linked)} of {len(lines)}"),
        "no personal value in any body": (not found and bool(run.personal),
                                          f"{len(found)} of {len(run.personal)} values found"),
    }


if __name__ == "__main__":
    sys.exit(main())
