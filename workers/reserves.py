"""Reserves: the share of each window that a lane leaves unspent.

A vendor's budget is the organization's, shared with the clinic's other tools: catch-up work
(replays, backfills) stops while the remaining share of a window is at or under
RELAY_RESERVE_CATCH_UP, a live delivery's later attempts (retry) at RELAY_RESERVE_RETRY, new
live deliveries at RELAY_RESERVE_LIVE (each destination may set its own, relay.core_settings).
The windows are the ones the vendor's headers state: Spruce's minute (`s-ratelimit-limit` and
`-remaining`) and day (`s-ratelimit-daily-limit`, `-daily-remaining`). A vendor that has stated
none (Sprig) has the throttle's configured window instead (SPRIG_RATE_LIMIT, counted by our own
call log), for catch-up and retry only: the configured limit is already live's ceiling (lower it
to leave room for other tools), and a live reserve on it would cut live throughput below it.
Once a vendor states a window, its own windows replace the configured one, which counts only
our calls: they count everyone's, and are what the reserves protect.

Work a reserve stops is *parked*: a deferral (no attempt, no retry budget spent) whose reason
names the window and the reserve. The check is part of the throttle's grant, one atomic step in
Redis (workers/lua/throttle_reserves.lua), so workers granting at once each count the others.

Spruce documents no reset time for its daily window. While a lane is parked on it, one call of
the highest waiting lane goes at most every RELAY_PARK_PROBE to read the headers again; when the
daily remaining is seen to jump back up, that moment is stored as the day's turnover, and the
time between two turnovers as the day's length: both are learned, not documented.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.config import CallRate
from relay.core_settings import percent
from relay.models import Lane
from workers.outcomes import Deferred

# How long a parking on the day is remembered at most (the day is seen to turn over sooner).
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Reserves:
    """Each lane's reserve (a share of a window's limit) and how often a parked account probes."""

    catch_up: float = 0.25
    retry: float = 0.10
    live: float = 0.02
    probe_s: float = 300.0

    def of(self, lane: str) -> float:
        return {"live": self.live, "retry": self.retry, "catch-up": self.catch_up}[lane]


class Parked(Deferred):
    """A call a reserve stopped: a deferral until the window has room, never napped through."""


def lane_of(lane: Lane, retry: bool) -> str:
    """The reserve level of a call: a live delivery's later attempts are the retry lane."""
    if lane == Lane.CATCH_UP:
        return "catch-up"
    return "retry" if retry else "live"


def parked(vendor: str, window: str, lane: str, share: float, wait_s: float, rate: CallRate) -> Parked:
    """The deferral of a call parked on `window` (minute, daily, configured)."""
    named = f"configured {rate.limit}/{rate.period_s:g}s" if window == "configured" else window
    return Parked(wait_s, f"parked: {vendor.capitalize()}'s {named} remaining at its {lane} reserve ({percent(share)})")
