"""What wraps every vendor call: the account's breaker and throttle before it, their
bookkeeping after it. Both live in Redis, shared by every process.

Without REDIS_URL (`relay dev`), the same code runs on an in-process fakeredis: correct for the
single worker process dev mode starts, not for several machines.
"""
from __future__ import annotations

import hashlib
from functools import cache

import redis

from relay.config import CallRate
from workers.breaker import Breaker
from workers.outcomes import Deferred, ErrorKind
from workers.throttle import Pacing, Throttle

THROTTLED_DEFAULT_WAIT_S = 10.0  # Sprig's SDK waits 10 s when a 429 names no wait
DAILY_EXHAUSTED_WAIT_S = 3600.0  # Spruce publishes no reset time for its daily budget: probe hourly


class Guard:
    def __init__(self, throttle: Throttle, breaker: Breaker):
        self.throttle, self.breaker = throttle, breaker

    def before(self, pacing: Pacing) -> None:
        """May raise Deferred: the breaker is open, or no throttle slot is free yet."""
        probing = self.breaker.check()
        try:
            self.throttle.acquire(pacing)
        except Deferred:
            if probing:  # no call, no outcome: a probe left standing would block everyone
                self.breaker.release_probe()
            raise

    def after(self, kind: ErrorKind | None, remaining: int | None = None,
              daily_remaining: int | None = None, retry_after: float | None = None) -> None:
        """`kind` None: the call succeeded. The counts are the vendor's rate-limit headers."""
        if kind == ErrorKind.TRANSIENT:
            self.breaker.failure()
        elif kind == ErrorKind.AUTH:
            self.breaker.failure(auth=True)
        elif kind == ErrorKind.THROTTLED:
            self.throttle.push(THROTTLED_DEFAULT_WAIT_S if retry_after is None else retry_after)
        else:  # success, permanent, duplicate: the vendor is up and answering
            self.breaker.success()
        self.throttle.observe(remaining)
        if daily_remaining == 0:
            self.throttle.push(DAILY_EXHAUSTED_WAIT_S)


def guard_for(vendor: str, credential: str, redis_url: str | None, rate: CallRate,
              cooldown_s: float) -> Guard:
    client, account = redis_client(redis_url), account_key(vendor, credential)
    return Guard(Throttle(client, account, rate), Breaker(client, account, cooldown_s=cooldown_s))


@cache
def redis_client(url: str | None) -> redis.Redis:
    if url is None:
        import fakeredis

        return fakeredis.FakeRedis()
    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)


def account_key(vendor: str, credential: str) -> str:
    # Keyed per vendor account (credential), never storing the credential itself.
    return f"{vendor}:{hashlib.sha256(credential.encode()).hexdigest()[:16]}"
