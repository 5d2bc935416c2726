"""What every worker process must agree on, kept in Redis: the vendor throttle, the circuit
breaker and per-subscriber locks.

Why a hand-written GCRA script rather than `limits`: a deferred delivery must be re-enqueued
with the exact wait until its slot, and the vendor's own headers (429 Retry-After, Spruce's
s-ratelimit-remaining) must be able to push every worker's next slot later. GCRA keeps one
number per account (the theoretical arrival time), answers "allowed, or wait N ms" atomically,
and takes both adjustments in the same script; it also spreads calls evenly, which the vendors'
fixed or rolling windows (unknown which) both accept. Time is Redis's own clock, so processes on
different machines agree.

Without REDIS_URL (`relay dev`), the same scripts run on an in-process fakeredis: correct for
the single worker process dev mode starts, not for several machines.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache, cached_property

import redis

from web.config import Config, RateLimit

log = logging.getLogger("relay.coordination")

# KEYS[1]: the account's next free slot (ms, GCRA's theoretical arrival time);
# KEYS[2]: a pause until (ms) that a vendor asked for;
# KEYS[3]: when the calls of the last window were made (a sorted set of ms).
# ARGV: op, value, limit, window (ms), jitter margin (ms), a unique member for KEYS[3], how late
# a reserved slot may still be used (ms). Returns {wait_ms, slot_ms}.
#   reserve(interval): take the next free slot, now or later; each caller gets its own, so
#                      deferred deliveries wake one per slot instead of all at once.
#   pause(ms):         nothing starts before now + ms, reserved slots included (a 429).
#   nudge(ms):         new reservations start no earlier than now + ms (the vendor's pace).
#   check(slot):       use a reserved slot: how long it must still wait (pause included).
#   take(interval):    a slot now or nothing; reserves nothing (replays: live traffic first).
# GCRA spaces calls evenly, but a slot used a little late followed by one used on time puts
# two calls closer than the interval. The log of calls made is the hard guarantee: a call
# goes only if the window before it (plus a margin for network jitter) holds fewer than
# `limit` calls, so no window of the vendor's, fixed or rolling, sees more.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, value = ARGV[1], tonumber(ARGV[2])
local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4]) + tonumber(ARGV[5])
local pause = tonumber(redis.call('GET', KEYS[2]) or 0)
local function ready()
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  local made = redis.call('ZCARD', KEYS[3])
  if made < limit then return now end
  local oldest = redis.call('ZRANGE', KEYS[3], made - limit, made - limit, 'WITHSCORES')
  return tonumber(oldest[2]) + window
end
local function go()
  redis.call('ZADD', KEYS[3], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[3], window + 1000)
end
if op == 'reserve' then
  local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now, pause)
  if slot <= now then slot = ready() end
  redis.call('SET', KEYS[1], slot + value, 'PX', slot + value - now + 60000)
  if slot <= now then go() end
  return {slot - now, slot}
elseif op == 'take' then
  local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now, pause)
  if slot <= now then slot = ready() end
  if slot > now then return {slot - now, slot} end
  redis.call('SET', KEYS[1], now + value, 'PX', value + 60000)
  go()
  return {0, now}
elseif op == 'pause' then
  if now + value > pause then
    redis.call('SET', KEYS[2], now + value, 'PX', value + 1000)
  end
  return {value, now + value}
elseif op == 'nudge' then
  if now + value > tonumber(redis.call('GET', KEYS[1]) or 0) then
    redis.call('SET', KEYS[1], now + value, 'PX', value + 60000)
  end
  return {value, now + value}
end
local due = math.max(pause, value)
if due > now or now - due > tonumber(ARGV[7]) then
  return {due - now, due}
end
local at = ready()
if at > now then return {at - now, at} end
go()
return {due - now, due}
"""
# The slot a deferred delivery reserved, set by the engine for the duration of one run.
reserved_slot: ContextVar[dict | None] = ContextVar("reserved_slot", default=None)
# Set by the engine while it runs a replayed delivery: it takes only slots live traffic left.
replaying: ContextVar[bool] = ContextVar("replaying", default=False)
# A reserved slot used later than this would bunch calls together; it is re-reserved instead.
LATE_SLOT_MS = 2000
# Calls reach the vendor a little after Redis granted them, not all equally late.
JITTER_MARGIN_MS = 100


class Deferred(Exception):
    """Not now, and not a failure: retry after `wait_s` without spending an attempt. `slot`,
    when set, is the throttle slot reserved for the retry."""

    def __init__(self, wait_s: float, reason: str, slot: dict | None = None):
        super().__init__(reason)
        self.wait_s = max(wait_s, 0.05)
        self.reason = reason
        self.slot = slot


@cache
def redis_client(url: str | None) -> redis.Redis:
    if url is None:
        import fakeredis

        return fakeredis.FakeRedis()
    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)


def redis_for(config: Config) -> redis.Redis:
    return redis_client(config.redis_url)


def account_key(vendor: str, credential: str) -> str:
    # Keyed per vendor account (credential), never storing the credential itself.
    return f"{vendor}:{hashlib.sha256(credential.encode()).hexdigest()[:16]}"


class Throttle:
    """The shared limiter for one vendor account."""

    def __init__(self, client: redis.Redis, account: str, rate: RateLimit):
        self._client, self.account, self.rate = client, account, rate
        self._script = client.register_script(_GCRA)
        self._key = f"relay:throttle:{account}"

    def acquire(self) -> None:
        """Go now, or raise Deferred with a slot reserved for this caller."""
        if replaying.get():
            self._acquire_leftover()
        else:
            self._acquire_slot()

    def _acquire_leftover(self) -> None:
        """Replays queue in a lane of their own, paced like the account, so a thousand of them
        wake one at a time; at its turn a replay goes only if live traffic has not claimed the
        account's next slot. Live deliveries never wait behind a replay's reservation."""
        self._replay_lane._acquire_slot()
        wait_ms, _ = self._run("take", self._interval_ms())
        if wait_ms > 0:
            raise Deferred(wait_ms / 1000, f"{self._reason()} (replay: live traffic first)")

    @cached_property
    def _replay_lane(self) -> Throttle:
        return Throttle(self._client, f"{self.account}:replay", self.rate)

    def _acquire_slot(self) -> None:
        slot = reserved_slot.get()
        if slot and slot["account"] == self.account:
            reserved_slot.set(None)
            wait_ms, due_ms = self._run("check", slot["at_ms"])
            if -LATE_SLOT_MS <= wait_ms <= 0:
                return
            if wait_ms > 0:  # woke early, or a vendor pause or a full window came in between
                raise Deferred(wait_ms / 1000, self._reason(), {"account": self.account, "at_ms": due_ms})
            # Far too late (the sweep found it): using it now would burst; queue again.
        wait_ms, slot_ms = self._run("reserve", self._interval_ms())
        if wait_ms > 0:
            raise Deferred(wait_ms / 1000, self._reason(), {"account": self.account, "at_ms": slot_ms})

    def push(self, wait_s: float) -> None:
        """Every process, reserved slots included, waits `wait_s` from now (a 429)."""
        self._run("pause", int(wait_s * 1000))

    def observe(self, limit: int | None, remaining: int | None, window_s: float = 60.0) -> None:
        """Spruce reports calls remaining in its 60 s window, shared with anything else using
        the organization. When that is fewer than our own pace would spend before the window
        could reset, spread what remains over a whole window."""
        if remaining is None:
            return
        spread_s = window_s / max(remaining, 1) if remaining else window_s
        if spread_s > self.rate.interval_s:
            self._run("nudge", int(spread_s * 1000))

    def snapshot(self) -> dict:
        """For operators: calls in the current window, the wait for a new slot, any pause."""
        seconds, micros = self._client.time()
        now_ms = seconds * 1000 + micros // 1000
        window_ms = int(self.rate.period_s * 1000)
        next_slot, paused_until = (int(float(v or 0)) for v in self._client.mget(self._key, f"{self._key}:pause"))
        return {
            "limit": f"{self.rate.limit}/{self.rate.period_s:g}s",
            "calls_in_window": self._client.zcount(f"{self._key}:calls", now_ms - window_ms, "+inf"),
            "next_slot_in_s": round(max(next_slot - now_ms, 0) / 1000, 1),
            "paused_for_s": round(max(paused_until - now_ms, 0) / 1000, 1),
        }

    def _run(self, op: str, value: int) -> tuple[int, int]:
        wait_ms, slot_ms = self._script(
            keys=[self._key, f"{self._key}:pause", f"{self._key}:calls"],
            args=[op, value, self.rate.limit, int(self.rate.period_s * 1000), JITTER_MARGIN_MS,
                  secrets.token_hex(8), LATE_SLOT_MS],
        )
        return int(wait_ms), int(slot_ms)

    def _reason(self) -> str:
        return f"throttled: {self.account.split(':')[0]} rate limit"

    def _interval_ms(self) -> int:
        return max(int(self.rate.interval_s * 1000), 1)


class Breaker:
    """Per vendor account: after `threshold` transient failures in a row, or one auth failure,
    stop calling for a cool-down; then let one probe through; its success closes it."""

    def __init__(self, client: redis.Redis, account: str, threshold: int = 5,
                 cooldown_s: float = 30.0, auth_cooldown_s: float = 300.0):
        self._client, self.account = client, account
        self.threshold, self.cooldown_s, self.auth_cooldown_s = threshold, cooldown_s, auth_cooldown_s
        base = f"relay:breaker:{account}"
        self._failures, self._open, self._probe = f"{base}:failures", f"{base}:open", f"{base}:probe"

    def check(self) -> None:
        open_ms = self._client.pttl(self._open)
        if open_ms > 0:
            raise Deferred(open_ms / 1000, f"circuit open for {self._vendor()}")
        if self._client.exists(f"{self._open}:was") and not self._client.set(
                self._probe, 1, nx=True, px=int(self.cooldown_s * 1000)):
            raise Deferred(2.0, f"circuit half-open for {self._vendor()}: a probe is running")

    def success(self) -> None:
        self._client.delete(self._failures, self._probe)
        if self._client.delete(f"{self._open}:was"):
            log.warning("circuit closed for %s: calls resume", self._vendor())

    def failure(self, auth: bool = False) -> None:
        self._client.delete(self._probe)
        if auth:
            self._trip(self.auth_cooldown_s, "credential rejected (401/403)")
            return
        failures = self._client.incr(self._failures)
        self._client.expire(self._failures, 600)
        if failures >= self.threshold:
            self._trip(self.cooldown_s, f"{failures} transient failures in a row")

    def state(self) -> str:
        if self._client.pttl(self._open) > 0:
            return "open"
        return "half-open" if self._client.exists(f"{self._open}:was") else "closed"

    def _trip(self, cooldown_s: float, why: str) -> None:
        self._client.set(self._open, 1, px=int(cooldown_s * 1000))
        # ":was" outlives the cool-down and marks the half-open phase; only its creator logs.
        if self._client.set(f"{self._open}:was", 1, nx=True, ex=86400):
            log.warning("circuit opened for %s for %.0fs: %s", self._vendor(), cooldown_s, why)
            _report(f"Relay stopped calling {self._vendor()}: {why}")
        self._client.delete(self._failures)

    def _vendor(self) -> str:
        return self.account.split(":")[0]


class Guard:
    """Wraps every vendor call: breaker and throttle before, their bookkeeping after."""

    def __init__(self, throttle: Throttle, breaker: Breaker):
        self.throttle, self.breaker = throttle, breaker

    def before(self) -> None:
        self.breaker.check()
        self.throttle.acquire()

    def after(self, kind: str, rate_limit=None, retry_after: float | None = None) -> None:
        if kind == "transient":
            self.breaker.failure()
        elif kind == "auth":
            self.breaker.failure(auth=True)
        elif kind == "throttled":
            self.throttle.push(retry_after or THROTTLED_DEFAULT_WAIT_S)
        else:  # ok, permanent, duplicate: the vendor is up and answering
            self.breaker.success()
        if rate_limit is not None:
            self.throttle.observe(rate_limit.limit, rate_limit.remaining)
            if rate_limit.daily_remaining == 0:  # the reset time is not published: probe hourly
                self.throttle.push(DAILY_EXHAUSTED_WAIT_S)


THROTTLED_DEFAULT_WAIT_S = 10.0  # Sprig's SDK waits 10 s when a 429 names no wait
DAILY_EXHAUSTED_WAIT_S = 3600.0
LOCK_LEASE_S = 120


@contextmanager
def subject_locks(client: redis.Redis, destination: str, subject_keys: list[str]):
    """Deliveries for one subscriber and vendor run one at a time (two events for one new
    subscriber must not create two Spruce contacts). The lease frees the lock of a dead worker."""
    held = []
    try:
        for key in sorted(set(subject_keys)):
            digest = hashlib.sha256(key.encode()).hexdigest()[:24]
            lock = client.lock(f"relay:lock:{destination}:{digest}", timeout=LOCK_LEASE_S,
                               blocking=False)
            if not lock.acquire():
                raise Deferred(1.0, "another delivery for this subscriber is running")
            held.append(lock)
        yield
    finally:
        for lock in held:
            try:
                lock.release()
            except redis.exceptions.LockError:
                pass  # the lease ran out first; nothing of ours to release


def _report(message: str) -> None:
    import sentry_sdk

    sentry_sdk.capture_message(message, level="warning")
