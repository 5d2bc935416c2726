"""One vendor account's rate-limit budget: a fixed window of `window_s` (Spruce's minute), and
for Spruce a daily window of `day_s` (24 hours, or two minutes in a drill); and "another
integration" of the same organization spending calls on both at a steady pace, as Spruce counts
every integration of an organization against one budget.

The other integration runs on no thread: the calls it would have made by now are counted, in
order and each at its own time, whenever the budget is read. Days follow each other from the
moment the limits were set, whether or not anyone calls; a minute window starts with the first
call counted in it. What each window saw is kept for /_sandbox/state: calls by Relay and by the
other integration, the calls it refused, and the lowest remaining (after any call, and after
Relay's). Not thread-safe: SandboxState uses it under its lock."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sandbox.switches import DAY_S

HISTORY = 100  # finished windows kept per kind
MINUTE, DAY = "minute", "day"


@dataclass(frozen=True)
class Window:
    """The outcome of counting one request against a vendor's rate-limit windows."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # whole seconds until the exhausted (or the per-minute) window resets
    daily_limit: int | None = None
    daily_remaining: int | None = None


@dataclass
class _Use:
    """One window and what was spent in it (times: time.monotonic())."""

    kind: str
    start: float
    limit: int
    length_s: float
    relay: int = 0
    other: int = 0
    relay_refused: int = 0
    other_refused: int = 0
    lowest_remaining: int | None = None
    lowest_remaining_after_relay: int | None = None

    @property
    def remaining(self) -> int:
        return max(self.limit - self.relay - self.other, 0)

    @property
    def ends(self) -> float:
        return self.start + self.length_s

    def reset_after(self, now: float) -> int:
        return max(1, math.ceil(self.ends - now))

    def spend(self, calls: int, by_relay: bool) -> None:
        if by_relay:
            self.relay += calls
        else:
            self.other += calls
        self.lowest_remaining = min(
            self.remaining, self.limit if self.lowest_remaining is None else self.lowest_remaining
        )
        if by_relay:
            lowest = self.lowest_remaining_after_relay
            self.lowest_remaining_after_relay = self.remaining if lowest is None else min(lowest, self.remaining)

    def refuse(self, calls: int, by_relay: bool) -> None:
        if by_relay:
            self.relay_refused += calls
        else:
            self.other_refused += calls

    def shown(self, now: float, wall_now: float) -> dict[str, Any]:
        return {
            "started_at": round(wall_now - (now - self.start), 3),
            "ends_in_s": round(max(self.ends - now, 0.0), 3),
            "limit": self.limit,
            "remaining": self.remaining,
            "relay": self.relay,
            "other": self.other,
            "relay_refused": self.relay_refused,
            "other_refused": self.other_refused,
            "lowest_remaining": self.lowest_remaining,
            "lowest_remaining_after_relay": self.lowest_remaining_after_relay,
        }


class Budget:
    """`limits`: a vendor's `rate_limit` switch (sandbox.switches): limit, window_s, and for
    Spruce daily_limit (None: no daily window), day_s, other_integration_every_s (None: no other
    integration)."""

    def __init__(self, limits: dict[str, Any], now: float):
        self.limit, self.window_s = limits["limit"], limits["window_s"]
        self.daily_limit: int | None = limits.get("daily_limit")
        self.day_s: float = limits.get("day_s") or DAY_S
        self._days_from = now
        self.minute: _Use | None = None
        self.day: _Use | None = None
        self.finished: dict[str, deque[_Use]] = {MINUTE: deque(maxlen=HISTORY), DAY: deque(maxlen=HISTORY)}
        # Calls counted, and refused (answered 429; Relay's: those the day's budget refused too).
        self.totals = {"relay": 0, "other": 0, "relay_refused": 0, "relay_refused_by_day": 0, "other_refused": 0}
        self.lowest_daily_remaining: int | None = None
        self.lowest_daily_remaining_after_relay: int | None = None
        self._other_every_s: float | None = None
        self._other_since, self._other_counted = now, 0
        self._latest = now
        self.pace_other(limits.get("other_integration_every_s"), now)

    def pace_other(self, every_s: float | None, now: float) -> None:
        """The other integration spends a call every `every_s` from now on (None: none); what it
        spent at its earlier pace is counted first."""
        now = self._clock(now)
        self._spend_other(now)
        self._other_every_s, self._other_since, self._other_counted = every_s, now, 0

    def spend(self, now: float) -> Window:
        """Count one of Relay's calls at `now`, unless a window is spent: then it is refused."""
        now = self._clock(now)
        self._spend_other(now)
        minute, day = self._windows_at(now)
        exhausted = [use for use in (minute, day) if use is not None and use.remaining == 0]
        if exhausted:
            self.totals["relay_refused"] += 1
            self.totals["relay_refused_by_day"] += day is not None and day.remaining == 0
            for use in exhausted:
                use.refuse(1, by_relay=True)
        else:
            self._count(1, now, by_relay=True)
        minute = self.minute
        return Window(
            allowed=not exhausted,
            limit=self.limit,
            remaining=self.limit if minute is None else minute.remaining,
            reset_after=max(use.reset_after(now) for use in exhausted) if exhausted else self._minute_reset(now),
            daily_limit=self.daily_limit,
            daily_remaining=None if self.day is None else self.day.remaining,
        )

    def shown(self, now: float) -> dict[str, Any]:
        """For /_sandbox/state: the limits, every window kept (oldest first, the current last)
        and the totals since the limits were set."""
        now = self._clock(now)
        self._spend_other(now)
        self._windows_at(now)
        wall_now = time.time()
        windows = {
            kind: [use.shown(now, wall_now) for use in (*self.finished[kind], current) if use is not None]
            for kind, current in ((MINUTE, self.minute), (DAY, self.day))
        }
        return {
            "limit": self.limit,
            "window_s": self.window_s,
            "daily_limit": self.daily_limit,
            "day_s": self.day_s if self.daily_limit is not None else None,
            "other_integration_every_s": self._other_every_s,
            **self.totals,
            "lowest_daily_remaining": self.lowest_daily_remaining,
            "lowest_daily_remaining_after_relay": self.lowest_daily_remaining_after_relay,
            "windows": windows,
        }

    def _clock(self, now: float) -> float:
        # Never back in time: a caller may have read the clock before another counted later.
        self._latest = max(self._latest, now)
        return self._latest

    def _minute_reset(self, now: float) -> int:
        return self.minute.reset_after(now) if self.minute is not None else max(1, math.ceil(self.window_s))

    def _windows_at(self, now: float) -> tuple[_Use | None, _Use | None]:
        """The windows `now` falls in, the finished ones put aside; no minute window while none
        has started (the next call counted starts one)."""
        if self.minute is not None and now >= self.minute.ends:
            self.finished[MINUTE].append(self.minute)
            self.minute = None
        if self.daily_limit is not None:
            number = math.floor((now - self._days_from) / self.day_s)
            start = self._days_from + number * self.day_s
            if self.day is None or self.day.start != start:
                if self.day is not None:
                    self.finished[DAY].append(self.day)
                self.day = _Use(DAY, start, self.daily_limit, self.day_s)
        return self.minute, self.day

    def _count(self, calls: int, at: float, by_relay: bool) -> None:
        if self.minute is None:
            self.minute = _Use(MINUTE, at, self.limit, self.window_s)
        for use in (self.minute, self.day):
            if use is not None:
                use.spend(calls, by_relay)
        self.totals["relay" if by_relay else "other"] += calls
        if self.day is not None:
            remaining = self.day.remaining
            self.lowest_daily_remaining = _lower(self.lowest_daily_remaining, remaining)
            if by_relay:
                self.lowest_daily_remaining_after_relay = _lower(self.lowest_daily_remaining_after_relay, remaining)

    def _spend_other(self, now: float) -> None:
        """Count the other integration's calls due by `now`, a run of them at a time: those that
        fall in the same windows (so a long idle spell costs a step per window, not per call)."""
        every = self._other_every_s
        if not every:
            return
        due = math.floor((now - self._other_since) / every)
        while self._other_counted < due:
            at = self._other_since + (self._other_counted + 1) * every
            minute, day = self._windows_at(at)
            ends = [use.ends for use in (minute, day) if use is not None]
            if minute is None:
                ends.append(at + self.window_s)
            # The calls before the first of these windows ends (the one due at its end is in the next).
            last = max(min(due, math.ceil((min(ends) - self._other_since) / every) - 1), self._other_counted + 1)
            calls = last - self._other_counted
            room = min(self.limit if minute is None else minute.remaining, math.inf if day is None else day.remaining)
            spent = int(min(calls, room))
            if spent:
                self._count(spent, at, by_relay=False)
            if calls > spent:
                self.totals["other_refused"] += calls - spent
                for use in (self.minute, self.day):
                    if use is not None and use.remaining == 0:
                        use.refuse(calls - spent, by_relay=False)
            self._other_counted = last


def _lower(lowest: int | None, value: int) -> int:
    return value if lowest is None else min(lowest, value)
