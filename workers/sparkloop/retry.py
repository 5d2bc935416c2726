"""The one retry policy for calls an operator waits for on SparkLoop's API (`relay backfill`'s
pages, `relay sparkloop webhooks`), decided by the delivery engine's classifier
(workers.classify). Unlike a delivery, which is re-enqueued, the operator waits in place:

- a rejected key (AUTH) or a refusal (fail): stops at once, with the classifier's reason;
- deferred (Relay's shared throttle, an open breaker, SparkLoop's 429): waits as long as it
  says, taking the throttle slot reserved for it;
- retry (a timeout, a 5xx): waits a capped exponential backoff and calls again, at most
  MAX_FAILURES times in all, and only for a call that can be repeated safely (a read): a write
  whose answer was lost may have been done;

and every wait of one call (deferred or backoff) counts against one budget, MAX_WAITING_S: a
longer one is reported ("on hold; try again in N s") instead of slept through.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

from relay.models import Lane
from workers.classify import Action, backoff, classify
from workers.outcomes import Deferred, ErrorKind
from workers.sparkloop.client import SparkLoopClient
from workers.throttle import Pacing
from workers.vendor_errors import VendorError

T = TypeVar("T")

# All the waiting of one call: the shared throttle hands out a slot within one window, SparkLoop's
# 429 asks for 10 s (workers.guard), so only an open breaker or a slow rate limit goes beyond.
MAX_WAITING_S = 120.0
# Waits of one call at most, whatever their length (a throttle answering "now" again and again).
MAX_WAITS = 200
# Transient failures of one call before giving up: 4 stays under the breaker's 5 in a row. An
# operator waits, so the backoff starts shorter than the workers' RELAY_RETRY_BASE_S.
MAX_FAILURES = 4
BACKOFF_BASE_S = 2.0
KEY_HINT = "copy the key from SparkLoop's Settings → Integrations page"

# Told of each wait SparkLoop's answer caused (a 429, a failure): (reason, seconds).
OnWait = Callable[[str, float], None]


class SparkLoopUnavailable(Exception):
    """SparkLoop refused, failed or is on hold for longer than an operator waits: one line, no
    personal data (the classifier's reason)."""


def call_patiently(
    client: SparkLoopClient,
    call: Callable[[SparkLoopClient], T],
    *,
    repeatable: bool,
    on_wait: OnWait | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call(client)` through the shared throttle, under the policy above. `repeatable`: the
    call may be made again after a transient failure (a read)."""
    pacing, waited_s, waits, failures = Pacing(lane=Lane.LIVE), 0.0, 0, 0
    while True:
        try:
            return call(client.for_run(pacing))
        except (VendorError, Deferred) as exc:
            verdict = classify(exc)
        if verdict.kind == ErrorKind.AUTH:  # deferred for a delivery; an operator fixes the key now
            raise SparkLoopUnavailable(f"SparkLoop refused SPARKLOOP_API_KEY ({verdict.reason}): {KEY_HINT}")
        if verdict.action == Action.FAIL:
            raise SparkLoopUnavailable(verdict.reason)
        if verdict.action == Action.DEFER:
            wait_s = verdict.wait_s or 0.0  # a deferral always says how long (workers.classify)
        else:
            failures += 1
            if not repeatable:
                raise SparkLoopUnavailable(
                    f"{verdict.reason}; SparkLoop may have acted on it all the same: "
                    "`relay sparkloop webhooks list` shows what it holds"
                )
            if failures >= MAX_FAILURES:
                raise SparkLoopUnavailable(verdict.reason)
            wait_s = backoff(failures, BACKOFF_BASE_S)
        waits += 1
        if waited_s + wait_s > MAX_WAITING_S or waits > MAX_WAITS:
            raise SparkLoopUnavailable(
                f"SparkLoop calls are on hold ({verdict.reason}); try again in {math.ceil(wait_s)} s"
            )
        if on_wait is not None and verdict.kind is not None:  # SparkLoop's answer, not Relay's throttle
            on_wait(verdict.reason, wait_s)
        # The slot reserved for this caller, if any: the next call uses it when due.
        pacing = Pacing(lane=Lane.LIVE, reserved=verdict.slot)
        sleep(wait_s)
        waited_s += wait_s
