"""The shared throttle: one limiter per vendor account in Redis, checked right before each
vendor call by every process.

Why hand-written Lua rather than `limits`: a call must be able to reserve its place in a queue
and learn the exact wait until it, the vendor's own headers (429 Retry-After, Spruce's
s-ratelimit-limit and -remaining) must bind every worker at once, and all of it must be one
atomic step on Redis's own clock, so processes on different machines agree.

A log of the calls made is the hard guarantee: a call goes only if the window before it (plus a
margin for clock and network jitter) holds fewer than the configured limit,
and, once the vendor has spoken, fewer than its `s-ratelimit-limit` in its 60 s window and no
more than its `s-ratelimit-remaining` said was left (counting our calls since the reading, and
those in flight when it was taken). A call is logged at its grant time and moved to the time it
ended once it has: the vendor saw it arrive between the two, so no window of the vendor's, fixed
or rolling, can hold more calls than the log counts in it.

Within those bounds live calls go at once, in bursts: a webhook's delivery never waits for an
even pace the vendor does not ask for. Only when the window is full do callers queue: each
reserves its own slot (the queue's tail, one interval apart, from when the window frees), so
deferred deliveries wake one per slot instead of all at once, and a newcomer queues behind them.
Catch-up work (replays, backfills) is paced evenly in a lane of its own and takes only what no
live caller is waiting for. Each lane's reserve (workers.reserves) is checked in the same step as
the grant: a call it stops is parked, and never logged.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import cast

import redis

from relay.config import CallRate
from relay.models import Lane
from workers.outcomes import Deferred
from workers.reserves import DAY_MS, Reserves, lane_of, parked

# Calls reach the vendor a little after Redis granted them, not all equally late.
JITTER_MARGIN_MS = 100
# A vendor's reading counts the calls it had seen: ours granted this long before the call it
# answered may still have been on the way, so they count against what it said remains.
IN_FLIGHT_MS = 2000
# Spruce's s-ratelimit-* window.
VENDOR_WINDOW_S = 60.0
# The least wait of a call a reserve parked (workers/lua/throttle_reserves.lua).
PARK_MIN_S = 1.0

# The scripts, in workers/lua/: each is the common prelude (the keys and arguments every one
# takes, described there) and the reserves' part, followed by its own part.
_LUA = resources.files("workers") / "lua"
_PRELUDE = (_LUA / "throttle_prelude.lua").read_text() + (_LUA / "throttle_reserves.lua").read_text()


def _script(name: str) -> str:
    return _PRELUDE + (_LUA / f"throttle_{name}.lua").read_text()


_RESERVE, _USE, _TAKE, _PAUSE, _FINISHED = (_script(name) for name in ("reserve", "use", "take", "pause", "finished"))


def sending_time_s(
    calls: int, rate: CallRate, lane: Lane, margin_ms: int = JITTER_MARGIN_MS, catch_up_kept: int = 0
) -> float:
    """The least time `calls` calls take through an idle throttle, by the rules above. Live calls
    go at once while the window (plus the margin) holds fewer than the limit, then one interval
    apart from when it frees. Catch-up calls go one interval apart; the call a full window turns
    away takes the lane's next slot after the window frees. When the catch-up reserve keeps
    `catch_up_kept` calls of the window (workers.reserves: a vendor that states no window of its
    own), the call it parks goes when the window's first call has left, a park's least wait
    (PARK_MIN_S) after it at the soonest. Live traffic and the vendor's own headers can only
    make it longer."""
    if calls <= 1:
        return 0.0
    last, margin_s = calls - 1, margin_ms / 1000
    if lane == Lane.CATCH_UP and catch_up_kept > 0:
        per_turn = rate.limit - catch_up_kept
        turn_s = max(rate.period_s + margin_s, per_turn * rate.interval_s + PARK_MIN_S)
        return (last // per_turn) * turn_s + (last % per_turn) * rate.interval_s
    if lane == Lane.CATCH_UP:
        window_turn_s = rate.period_s + max(margin_s, rate.interval_s)
    elif last < rate.limit:
        return 0.0
    else:
        window_turn_s = rate.period_s + margin_s
    return (last // rate.limit) * window_turn_s + (last % rate.limit) * rate.interval_s


@dataclass(frozen=True)
class Grant:
    """A call the throttle let through: when (ms, Redis's clock) and its entry in the log."""

    at_ms: int
    member: str


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
    retry: bool = False  # a live delivery's later attempt: the retry lane's reserve (workers.reserves)

    def take_reserved(self, account: str) -> Slot | None:
        if self.reserved is None or self.reserved.account != account:
            return None
        slot, self.reserved = self.reserved, None
        return slot


class Throttle:
    """The shared limiter for one vendor account."""

    def __init__(
        self,
        client: redis.Redis,
        account: str,
        rate: CallRate,
        vendor_window_s: float | None = None,
        margin_ms: int = JITTER_MARGIN_MS,
        reserves: Reserves | None = None,
    ):
        self._client, self.account, self.rate, self._margin_ms = client, account, rate, margin_ms
        self.reserves = reserves
        self.vendor_window_ms = int((VENDOR_WINDOW_S if vendor_window_s is None else vendor_window_s) * 1000)
        self._key = f"relay:throttle:{account}"
        self._reserves_key = f"relay:reserve:{account}"
        self._reserve, self._use, self._take, self._pause, self._finished = (
            client.register_script(source) for source in (_RESERVE, _USE, _TAKE, _PAUSE, _FINISHED)
        )

    def acquire(self, pacing: Pacing) -> Grant:
        """Go now (the Grant to pass to `finished`), or raise Deferred with the wait and, for a
        live caller, the slot reserved for it; Parked when a reserve stops the call."""
        if pacing.lane == Lane.CATCH_UP:
            return self._acquire_leftover(pacing)
        reserved, member, lane = pacing.take_reserved(self.account), secrets.token_hex(8), self._lane(pacing)
        if reserved is not None:
            wait_ms, at_ms = self._grant(self._use, reserved.at_ms, member, lane)
        else:
            wait_ms, at_ms = self._grant(self._reserve, 0, member, lane)
        if wait_ms > 0:
            raise Deferred(wait_ms / 1000, self._reason(), Slot(self.account, at_ms))
        return Grant(at_ms, member)

    def _acquire_leftover(self, pacing: Pacing) -> Grant:
        """Catch-up work waits for its lane's turn (one reserved slot each, so a thousand
        replays wake one at a time), then goes only if no live caller is waiting."""
        self._catch_up_lane.acquire(Pacing(reserved=pacing.take_reserved(self._catch_up_lane.account)))
        member = secrets.token_hex(8)
        wait_ms, at_ms = self._grant(self._take, 0, member, self._lane(pacing))
        if wait_ms > 0:
            raise Deferred(wait_ms / 1000, f"{self._reason()} (replay: live traffic first)")
        return Grant(at_ms, member)

    @cached_property
    def _catch_up_lane(self) -> Throttle:
        # Its own queue and log, at the account's even pace: one call per interval, no bursts
        # (and no jitter margin: the account's own log is the guarantee).
        return Throttle(
            self._client,
            f"{self.account}:replay",
            CallRate(1, self.rate.interval_s),
            self.vendor_window_ms / 1000,
            margin_ms=0,
        )

    def sending_time_s(self, calls: int, lane: Lane) -> float:
        return sending_time_s(calls, self.rate, lane, self._margin_ms, self._catch_up_kept())

    def _catch_up_kept(self) -> int:
        """The calls of the configured window the catch-up reserve keeps: none once the vendor
        stated a window of its own (its reading in Redis), which replaces the configured one."""
        if self.reserves is None or self._client.exists(f"{self._key}:vendor", self._reserves_key):
            return 0
        return math.floor(self.rate.limit * self.reserves.catch_up)

    def push(self, wait_s: float) -> None:
        """Every process, reserved slots included, waits `wait_s` from now (a 429)."""
        self._run(self._pause, int(wait_s * 1000))

    def finished(
        self,
        grant: Grant,
        limit: int | None = None,
        remaining: int | None = None,
        daily_limit: int | None = None,
        daily_remaining: int | None = None,
    ) -> None:
        """The call `grant` let through has ended, and what the vendor's answer said of its
        windows (Spruce's s-ratelimit-limit and -remaining, which count every integration of
        the organization, and its daily ones): from now on no process spends more than that,
        and the reserves count from it."""
        said = (limit, remaining, daily_limit, daily_remaining)
        self._run(self._finished, grant.at_ms, *(-1 if count is None else count for count in said), member=grant.member)

    def day(self) -> dict[str, int]:
        """The vendor's daily reading as the reserves keep it (at, limit, remaining) and what was
        learned of its day (turned_at, day_ms); empty where the vendor stated no day."""
        stored = cast(dict, self._client.hgetall(self._reserves_key))
        return {k.decode(): int(v) for k, v in stored.items()}

    def snapshot(self) -> dict:
        """For operators: calls in the current window, the wait for a new slot, any pause, and
        what the vendor last said remains."""
        # redis-py types each result as the async client's too.
        seconds, micros = cast(tuple[int, int], self._client.time())
        now_ms = seconds * 1000 + micros // 1000
        window_ms = int(self.rate.period_s * 1000)
        tail, paused_until = (
            int(float(v or 0)) for v in cast(list, self._client.mget(self._key, f"{self._key}:pause"))
        )
        seen = cast("bytes | None", self._client.hget(f"{self._key}:vendor", "remaining"))
        return {
            "limit": f"{self.rate.limit}/{self.rate.period_s:g}s",
            "calls_in_window": self._client.zcount(f"{self._key}:calls", now_ms - window_ms, "+inf"),
            "next_slot_in_s": round(max(tail - now_ms, 0) / 1000, 1),
            "paused_for_s": round(max(paused_until - now_ms, 0) / 1000, 1),
            "vendor_remaining": None if seen is None else int(seen),
        }

    def _lane(self, pacing: Pacing) -> str:
        """The reserve the call spends above (none without reserves)."""
        return "" if self.reserves is None else lane_of(pacing.lane, pacing.retry)

    def _grant(self, script, value: int, member: str, lane: str) -> tuple[int, int]:
        """Run a granting script: (wait_ms, slot_ms), or raise Parked."""
        wait_ms, slot_ms, *window = self._run(script, value, member=member, lane=lane)
        if window and self.reserves is not None:
            vendor, share = self.account.split(":")[0], self.reserves.of(lane)
            raise parked(vendor, window[0].decode(), lane, share, wait_ms / 1000, self.rate)
        return int(wait_ms), int(slot_ms)

    def _run(self, script, value: int, *extra: int, member: str = "", lane: str = "") -> list:
        reserves = self.reserves or Reserves()
        return script(
            keys=[
                self._key,
                f"{self._key}:pause",
                f"{self._key}:calls",
                f"{self._key}:vendor",
                self._reserves_key,
                f"{self._reserves_key}:parking",
            ],
            args=[
                self.rate.limit,
                int(self.rate.period_s * 1000) + self._margin_ms,
                member,
                value,
                self._interval_ms(),
                self.vendor_window_ms,
                IN_FLIGHT_MS,
                lane,
                reserves.of(lane) if lane else 0,
                reserves.live,
                int(reserves.probe_s * 1000),
                DAY_MS,
                *extra,
            ],
        )

    def _reason(self) -> str:
        return f"throttled: {self.account.split(':')[0]} rate limit"

    def _interval_ms(self) -> int:
        return max(int(self.rate.interval_s * 1000), 1)
