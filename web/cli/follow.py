"""`relay events list --follow`: new events and delivery outcomes, one line each, as they happen
(what: operations.follow, polled every FOLLOW_INTERVAL_S). A line holds ids, types, statuses and
the stored (already scrubbed) error: no payload value.

    14:02:11  webhook  new_referral  event 12  received
    14:02:12  sprig  event 12  delivered (1 attempt)
    14:02:12  spruce  event 12  will retry at 14:02:42 (attempt 1, HTTP 503): Spruce answered 503 …
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime

from operations.follow import DeliveryNews, Follower, NewEvent, News
from relay.models import DeliveryStatus

FOLLOW_INTERVAL_S = 1.0


def follow(
    follower: Follower,
    emit: Callable[[str], None],
    should_stop: Callable[[], bool] = lambda: False,
    interval_s: float = FOLLOW_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll every `interval_s` and emit each line until should_stop() (checked before each wait):
    by default until Ctrl-C, as `relay events list --follow` does. Code that must end on its own
    (the tests) passes should_stop, e.g. stop_after(polls)."""
    while not should_stop():
        sleep(interval_s)
        for news in follower.poll():
            emit(line(news))


def stop_after(polls: int | None) -> Callable[[], bool]:
    """should_stop for follow(): once `polls` polls have run (None: never)."""
    if polls is None:
        return lambda: False
    checks = itertools.count()
    return lambda: next(checks) >= polls


def line(news: News) -> str:
    if isinstance(news, NewEvent):
        return f"{_clock(news.at)}  {news.source}  {news.type}  event {news.event_id}  {news.status}"
    return f"{_clock(news.at)}  {news.destination}  event {news.event_id}  {_what(news)}"


def _what(news: DeliveryNews) -> str:
    attempts = f"{news.attempts} attempt{'' if news.attempts == 1 else 's'}"
    code = f", HTTP {news.status_code}" if news.status_code else ""
    error = f": {news.error}" if news.error else ""
    if news.status == DeliveryStatus.SUCCEEDED:
        return f"delivered ({attempts})"
    if news.status == DeliveryStatus.SUPERSEDED:
        return f"superseded: newer values were already sent ({attempts})"
    if news.status == DeliveryStatus.FAILED:
        return f"failed ({attempts}{code}){error}"
    when = f"{'deferred until' if news.deferred else 'will retry at'} {_clock(news.next_attempt_at)}"
    return f"{when} (attempt {news.attempts}{code}){error}"


def _clock(moment: datetime | None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%H:%M:%S")
