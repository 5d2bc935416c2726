"""The shared throttle: one limiter per vendor account in Redis, checked right before each
vendor call by every process.

Why hand-written Lua rather than `limits`: a deferred delivery must be re-enqueued with the
exact wait until its slot, and the vendor's own headers (429 Retry-After, Spruce's
s-ratelimit-remaining) must be able to push every worker's next slot later. GCRA keeps one
number per account (the theoretical arrival time), answers "allowed, or wait N ms" atomically,
and takes both adjustments in small scripts; it also spreads calls evenly, which the vendors'
fixed or rolling windows (unknown which) both accept. Time is Redis's own clock, so processes
on different machines agree.

GCRA spaces calls evenly, but a slot used a little late followed by one used on time puts two
calls closer than the interval. A log of the calls made is the hard guarantee: a call goes only
if the window before it (plus a margin for network jitter) holds fewer than `limit` calls, so
no window of the vendor's, fixed or rolling, sees more.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cached_property

import redis

from relay.config import CallRate
from relay.models import Lane
from workers.outcomes import Deferred

# A reserved slot used later than this would bunch calls together; it is re-reserved instead.
LATE_SLOT_MS = 2000
# Calls reach the vendor a little after Redis granted them, not all equally late.
JITTER_MARGIN_MS = 100

# Every script: KEYS[1] the account's next free slot (ms, GCRA's theoretical arrival time),
# KEYS[2] a pause until (ms) that the vendor asked for, KEYS[3] when the calls of the last
# window were made (a sorted set of ms). ARGV[1] limit, ARGV[2] window + margin (ms), ARGV[3]
# a unique member for KEYS[3], ARGV[4] the script's own value. Each returns {wait_ms, slot_ms}.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window, value = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local pause = tonumber(redis.call('GET', KEYS[2]) or 0)
local function ready()
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  local made = redis.call('ZCARD', KEYS[3])
  if made < limit then return now end
  local oldest = redis.call('ZRANGE', KEYS[3], made - limit, made - limit, 'WITHSCORES')
  return tonumber(oldest[2]) + window
end
local function go()
  redis.call('ZADD', KEYS[3], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[3], window + 1000)
end
local function next_slot()
  local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now, pause)
  if slot <= now then slot = ready() end
  return slot
end
"""
# value = the interval. Take the next free slot, now or later; each caller gets its own, so
# deferred deliveries wake one per slot instead of all at once.
_RESERVE = _PRELUDE + """
local slot = next_slot()
redis.call('SET', KEYS[1], slot + value, 'PX', slot + value - now + 60000)
if slot <= now then go() end
return {slot - now, slot}
"""
# value = the interval. A slot now or nothing, reserving nothing (catch-up work: live first).
_TAKE = _PRELUDE + """
local slot = next_slot()
if slot > now then return {slot - now, slot} end
redis.call('SET', KEYS[1], now + value, 'PX', value + 60000)
go()
return {0, now}
"""
# value = a reserved slot (ms). How long it must still wait (a pause included); a slot more
# than ARGV[5] ms late is refused (it would burst) and returned as it was.
_USE = _PRELUDE + """
local due = math.max(pause, value)
if due > now or now - due > tonumber(ARGV[5]) then return {due - now, due} end
local at = ready()
if at > now then return {at - now, at} end
go()
return {due - now, due}
"""
# value = ms. Nothing starts before now + value, reserved slots included (a 429).
_PAUSE = _PRELUDE + """
if now + value > pause then redis.call('SET', KEYS[2], now + value, 'PX', value + 1000) end
return {value, now + value}
"""
# value = ms. New reservations start no earlier than now + value (the vendor's pace).
_NUDGE = _PRELUDE + """
if now + value > tonumber(redis.call('GET', KEYS[1]) or 0) then
  redis.call('SET', KEYS[1], now + value, 'PX', value + 60000)
end
return {value, now + value}
"""


@dataclass(frozen=True)
class Slot:
    """A throttle slot reserved for one deferred caller: use it when it is due."""
    account: str
    at_ms: int

    def to_json(self) -> dict:
        return {"account": self.account, "at_ms": self.at_ms}

    @classmethod
    def from_json(cls, stored: dict | None) -> Slot | None:
        return cls(stored["account"], int(stored["at_ms"])) if stored else None


@dataclass
class Pacing:
    """How one run of a delivery (or one backfill page) may use the throttle: its lane, and the
    slot an earlier run reserved, which its first call for that account uses."""
    lane: Lane = Lane.LIVE
    reserved: Slot | None = None

    def take_reserved(self, account: str) -> Slot | None:
        if self.reserved is None or self.reserved.account != account:
            return None
        slot, self.reserved = self.reserved, None
        return slot


class Throttle:
    """The shared limiter for one vendor account."""

    def __init__(self, client: redis.Redis, account: str, rate: CallRate):
        self._client, self.account, self.rate = client, account, rate
        self._key = f"relay:throttle:{account}"
        self._reserve, self._take, self._use, self._pause, self._nudge = (
            client.register_script(source) for source in (_RESERVE, _TAKE, _USE, _PAUSE, _NUDGE))

    def acquire(self, pacing: Pacing) -> None:
        """Go now, or raise Deferred with a slot reserved for this caller."""
        if pacing.lane == Lane.CATCH_UP:
            self._acquire_leftover(pacing)
        else:
            self._acquire_slot(pacing.take_reserved(self.account))

    def _acquire_leftover(self, pacing: Pacing) -> None:
        """Catch-up work queues in a lane of its own, paced like the account, so a thousand
        replays wake one at a time; at its turn one goes only if live traffic has not claimed
        the account's next slot. Live deliveries never wait behind a replay's reservation."""
        self._catch_up_lane._acquire_slot(pacing.take_reserved(self._catch_up_lane.account))
        wait_ms, _ = self._run(self._take, self._interval_ms())
        if wait_ms > 0:
            raise Deferred(wait_ms / 1000, f"{self._reason()} (replay: live traffic first)")

    @cached_property
    def _catch_up_lane(self) -> Throttle:
        return Throttle(self._client, f"{self.account}:replay", self.rate)

    def _acquire_slot(self, reserved: Slot | None) -> None:
        if reserved is not None:
            wait_ms, due_ms = self._run(self._use, reserved.at_ms)
            if -LATE_SLOT_MS <= wait_ms <= 0:
                return
            if wait_ms > 0:  # woke early, or a vendor pause or a full window came in between
                raise Deferred(wait_ms / 1000, self._reason(), Slot(self.account, due_ms))
            # Far too late (the sweep found it): using it now would burst; queue again.
        wait_ms, slot_ms = self._run(self._reserve, self._interval_ms())
        if wait_ms > 0:
            raise Deferred(wait_ms / 1000, self._reason(), Slot(self.account, slot_ms))

    def push(self, wait_s: float) -> None:
        """Every process, reserved slots included, waits `wait_s` from now (a 429)."""
        self._run(self._pause, int(wait_s * 1000))

    def observe(self, remaining: int | None, window_s: float = 60.0) -> None:
        """Spruce reports calls remaining in its 60 s window, shared with anything else using
        the organization. When that is fewer than our own pace would spend before the window
        could reset, spread what remains over a whole window."""
        if remaining is None:
            return
        spread_s = window_s / max(remaining, 1) if remaining else window_s
        if spread_s > self.rate.interval_s:
            self._run(self._nudge, int(spread_s * 1000))

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

    def _run(self, script, value: int) -> tuple[int, int]:
        wait_ms, slot_ms = script(
            keys=[self._key, f"{self._key}:pause", f"{self._key}:calls"],
            args=[self.rate.limit, int(self.rate.period_s * 1000) + JITTER_MARGIN_MS,
                  secrets.token_hex(8), value, LATE_SLOT_MS],
        )
        return int(wait_ms), int(slot_ms)

    def _reason(self) -> str:
        return f"throttled: {self.account.split(':')[0]} rate limit"

    def _interval_ms(self) -> int:
        return max(int(self.rate.interval_s * 1000), 1)
