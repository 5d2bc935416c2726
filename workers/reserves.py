"""Reserves: the share of each window a vendor reports that a lane leaves unspent.

A vendor's budget is the organization's, shared with the clinic's other tools: catch-up work
(replays, backfills) stops while the remaining share of a window is at or under
RELAY_RESERVE_CATCH_UP, a live delivery's later attempts (retry) at RELAY_RESERVE_RETRY, new
live deliveries at RELAY_RESERVE_LIVE. The windows are the ones the vendor's headers state:
Spruce's minute (`s-ratelimit-limit`/`-remaining`, kept by the throttle) and day
(`s-ratelimit-daily-limit`/`-daily-remaining`, kept here). Work a reserve stops is *parked*: a
deferral (no attempt, no retry budget spent) whose reason names the window and the reserve.

Spruce documents no reset time for its daily window. While a lane is parked on it, one call of
the highest waiting lane goes at most every RELAY_PARK_PROBE to read the headers again; when the
daily remaining is seen to jump back up, that moment is stored as the day's turnover, and the
time between two turnovers as the day's length: both are learned, not documented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from relay.models import Lane
from workers.outcomes import Deferred

# As workers.throttle.IN_FLIGHT_MS: how long before a reading a call may have been granted.
IN_FLIGHT_MS = 2000
DAY_MS = 24 * 3600 * 1000
PARKED_FOR_MS = DAY_MS
# Lanes from the highest: a probe goes to the highest lane waiting.
LANES = ("live", "retry", "catch-up")


@dataclass(frozen=True)
class Reserves:
    """Each lane's reserve (a share of a window's limit) and how often a parked account probes."""

    catch_up: float = 0.25
    retry: float = 0.10
    live: float = 0.02
    probe_s: float = 300.0

    def of(self, lane: str) -> float:
        return {"live": self.live, "retry": self.retry, "catch-up": self.catch_up}[lane]


def lane_of(lane: Lane, retry: bool) -> str:
    """The reserve level of a call: a live delivery's later attempts are the retry lane."""
    if lane == Lane.CATCH_UP:
        return "catch-up"
    return "retry" if retry else "live"


def kept(limit: int, share: float) -> float:
    """The calls a reserve keeps: a lane may spend while more than this remains."""
    return limit * share


class ReserveCheck:
    """The reserves of one vendor account, checked right after the throttle granted a call (the
    grant is in the log, so concurrent callers each count the others)."""

    def __init__(self, client: redis.Redis, account: str, vendor: str, reserves: Reserves, vendor_window_ms: int):
        self._client, self.account, self.vendor, self.reserves = client, account, vendor, reserves
        self._vendor_window_ms = vendor_window_ms
        self._throttle_key = f"relay:throttle:{account}"
        self._key = f"relay:reserve:{account}"

    def check(self, lane: str, granted_at_ms: int) -> None:
        """Raise Deferred ("parked: ...") if a window's remaining share, our calls since its
        reading counted, is at or under `lane`'s reserve, unless this call is the account's
        probe."""
        now_ms = self._now_ms()
        share = self.reserves.of(lane)
        for window, limit, remaining, at_ms, wait_s in self._windows(now_ms):
            if limit <= 0:
                continue
            # Our calls the reading may not count: those logged since it, less the call it
            # answered (logged at its end) and this one.
            logged = cast(int, self._client.zcount(f"{self._throttle_key}:calls", at_ms, "+inf"))
            left_before = remaining - max(logged - 2, 0)
            if left_before > kept(limit, share):
                continue
            if window == "daily" and self._probe(lane, now_ms, limit, left_before):
                continue
            self._client.set(f"{self._key}:parked:{lane}", now_ms, px=int(max(wait_s, 1) * 2000))
            if window == "daily":
                self._parked_on_the_day(now_ms)
            raise Deferred(
                wait_s,
                f"parked: {self.vendor.capitalize()}'s {window} remaining at its {lane} reserve ({share:.0%})",
            )
        self._client.delete(f"{self._key}:parked:{lane}")

    def learn(self, granted_at_ms: int, limit: int | None, remaining: int | None) -> None:
        """Keep the daily reading of the answer to the call granted at `granted_at_ms` (the
        latest grant's wins); a jump up in the remaining count is the day turning over."""
        if remaining is None:
            return
        seen = cast(list, self._client.hmget(self._key, ["at", "remaining", "turned_at"]))
        if seen[0] is not None and granted_at_ms < int(seen[0]):
            return
        fields: dict[str, int] = {"at": granted_at_ms, "remaining": remaining}
        if limit is not None:
            fields["limit"] = limit
        if seen[1] is not None and remaining > int(seen[1]):
            fields["turned_at"] = granted_at_ms
            if seen[2] is not None:
                fields["day_ms"] = granted_at_ms - int(seen[2])
            self._client.delete(f"{self._key}:probe", f"{self._key}:daily_parked")
        self._client.hset(self._key, mapping=fields)
        if remaining == 0:  # the guard pauses the account until the probe: it is parked
            self._parked_on_the_day(granted_at_ms)
            self._client.set(f"{self._key}:probe", granted_at_ms, px=int(self.reserves.probe_s * 1000))

    def _parked_on_the_day(self, now_ms: int) -> None:
        # Kept until the day is seen to turn over (a day at most): parked deliveries may come
        # back late, and the first of them after RELAY_PARK_PROBE is the probe.
        self._client.set(f"{self._key}:daily_parked", now_ms, px=PARKED_FOR_MS)

    def day(self) -> dict[str, int]:
        """The daily reading (at, limit, remaining) and what was learned (turned_at, day_ms)."""
        stored = cast(dict, self._client.hgetall(self._key))
        return {k.decode(): int(v) for k, v in stored.items()}

    def _windows(self, now_ms: int):
        """Each reported window: its name, limit, remaining, reading time and the wait to park."""
        minute = cast(
            list, self._client.hmget(f"{self._throttle_key}:vendor", ["at", "limit", "remaining", "window_at"])
        )
        if minute[0] is not None and minute[1] is not None and minute[2] is not None:
            at_ms = int(minute[0])
            turns_over = min(at_ms, int(minute[3] or at_ms) + IN_FLIGHT_MS) + self._vendor_window_ms
            yield "minute", int(minute[1]), int(minute[2]), at_ms, max((turns_over - now_ms) / 1000, 1.0)
        day = self.day()
        if "remaining" in day and "limit" in day:
            yield "daily", day["limit"], day["remaining"], day["at"], self._park_s(now_ms, day)

    def _park_s(self, now_ms: int, day: dict[str, int]) -> float:
        # Until the next probe, or the learned turnover if that comes first.
        wait_s = self.reserves.probe_s
        if "turned_at" in day and "day_ms" in day:
            next_turn_ms = day["turned_at"] + day["day_ms"]
            if next_turn_ms > now_ms:
                wait_s = min(wait_s, (next_turn_ms - now_ms) / 1000 + 1)
        return max(wait_s, 1.0)

    def _probe(self, lane: str, now_ms: int, limit: int, left_before: int) -> bool:
        """Whether this call is the account's probe: the highest lane waiting, once per
        RELAY_PARK_PROBE, and never into the live reserve once a day's turnover is known and
        not yet due."""
        higher = LANES[: LANES.index(lane)]
        if any(self._client.exists(f"{self._key}:parked:{other}") for other in higher):
            return False
        if left_before <= kept(limit, self.reserves.live):
            day = self.day()
            if "turned_at" in day and "day_ms" in day and now_ms < day["turned_at"] + day["day_ms"]:
                return False
        if not self._client.set(f"{self._key}:probe", now_ms, nx=True, px=int(self.reserves.probe_s * 1000)):
            return False  # a probe (or the first parking) within RELAY_PARK_PROBE
        # The first call a reserve stops starts the clock; the first after it is the probe.
        return bool(self._client.exists(f"{self._key}:daily_parked"))

    def _now_ms(self) -> int:
        seconds, micros = cast(tuple[int, int], self._client.time())
        return seconds * 1000 + micros // 1000
