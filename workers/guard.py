"""What wraps every vendor call: the account's breaker and throttle before it, their
bookkeeping after it. Both live in Redis, shared by every process (the runtime's, relay.runtime)."""

from __future__ import annotations

import hashlib
import time

import redis

from relay.config import CallRate
from relay.metrics import Metrics
from workers.breaker import Breaker
from workers.outcomes import Deferred, ErrorKind
from workers.reserves import Parked, Reserves
from workers.throttle import Grant, Pacing, Throttle

# A wait for a throttle slot this short is slept through in the task: a deferral (a database
# write, then the dispatcher's publish) costs more, and the delivery might lose its place.
NAP_WITHIN_S = 2.0
MAX_NAPS = 4
THROTTLED_DEFAULT_WAIT_S = 10.0  # Sprig's SDK waits 10 s when a 429 names no wait
# Spruce publishes no reset time for its daily budget: without reserves, probe hourly; with
# them, every RELAY_PARK_PROBE (the throttle learns the turnover, workers.reserves).
DAILY_EXHAUSTED_WAIT_S = 3600.0


class Guard:
    def __init__(
        self,
        throttle: Throttle,
        breaker: Breaker,
        metrics: Metrics | None = None,
        nap_within_s: float = NAP_WITHIN_S,
        sleep=time.sleep,
    ):
        self.throttle, self.breaker, self.metrics = throttle, breaker, metrics
        self._nap_within_s, self._sleep = nap_within_s, sleep

    def before(self, pacing: Pacing) -> Grant:
        """Return the throttle's Grant once the call may go; a short wait for a slot is slept
        through. May raise Deferred: the breaker is open, the wait is long, or a reserve parks
        the call's lane (Parked, workers.reserves)."""
        probing = self.breaker.check()
        try:
            return self._acquire(pacing)
        except Deferred:
            if probing:  # no call, no outcome: a probe left standing would block everyone
                self.breaker.release_probe()
            if self.metrics is not None:
                self.metrics.count("relay_throttle_deferrals_total", vendor=self.breaker.vendor)
            raise

    def _acquire(self, pacing: Pacing) -> Grant:
        for _ in range(MAX_NAPS):
            try:
                return self.throttle.acquire(pacing)
            except Deferred as deferred:
                if isinstance(deferred, Parked) or deferred.wait_s > self._nap_within_s:
                    raise
                pacing.reserved = deferred.slot or pacing.reserved
                self._sleep(deferred.wait_s)
        return self.throttle.acquire(pacing)  # after the last nap: go, or defer

    def after(
        self,
        kind: ErrorKind | None,
        remaining: int | None = None,
        daily_remaining: int | None = None,
        retry_after: float | None = None,
        grant: Grant | None = None,
        limit: int | None = None,
        daily_limit: int | None = None,
    ) -> None:
        """`kind` None: the call succeeded. The counts are the vendor's rate-limit headers on
        the answer to the call the throttle let through with `grant`."""
        if kind == ErrorKind.TRANSIENT:
            self.breaker.failure()
        elif kind == ErrorKind.AUTH:
            self.breaker.failure(auth=True)
        elif kind == ErrorKind.THROTTLED:
            self.throttle.push(THROTTLED_DEFAULT_WAIT_S if retry_after is None else retry_after)
        else:  # success, permanent, duplicate: the vendor is up and answering
            self.breaker.success()
        if grant is not None:
            self.throttle.finished(grant, limit, remaining, daily_limit, daily_remaining)
        if daily_remaining == 0:
            reserves = self.throttle.reserves
            self.throttle.push(DAILY_EXHAUSTED_WAIT_S if reserves is None else reserves.probe_s)


def guard_for(
    vendor: str,
    credential: str,
    client: redis.Redis,
    metrics: Metrics,
    rate: CallRate,
    cooldown_s: float,
    reserves: Reserves | None = None,
) -> Guard:
    """The guard of the vendor account `credential` names, kept in `client` (the runtime's Redis)."""
    account = account_key(vendor, credential)
    throttle = Throttle(client, account, rate, reserves=reserves)
    return Guard(throttle, Breaker(client, account, cooldown_s=cooldown_s, metrics=metrics), metrics)


def account_key(vendor: str, credential: str) -> str:
    # Keyed per vendor account (credential), never storing the credential itself.
    return f"{vendor}:{hashlib.sha256(credential.encode()).hexdigest()[:16]}"
