"""The one classifier: what an exception raised by a delivery (or a call on SparkLoop's API,
workers.sparkloop.retry) means.

- deferred (the shared throttle, an open breaker, a 429, a busy subscriber, a rejected
  credential while the breaker cools down, a payload sealed with a key this process lacks):
  again at the exact time, no attempt spent;
- retry (timeouts, connection errors, 5xx, 408/409/425, Relay's own RetryLater, an unexpected
  error): again after a capped exponential backoff, until the attempt limit or the maximum age;
- fail (other 4xx, a payload that cannot be delivered): at once, with the vendor's message.
"""

from __future__ import annotations

import logging
import random
import socket
import sys
import traceback
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import redis

from relay.sealing import SealedDataError
from workers.guard import THROTTLED_DEFAULT_WAIT_S
from workers.outcomes import Deferred, DeliveryFailed, ErrorKind, RetryLater
from workers.throttle import Slot
from workers.vendor_errors import VendorError

log = logging.getLogger("relay.delivery")

MAX_BACKOFF_S = 3600
AUTH_RECHECK_S = 60.0
# A key is added by a deploy or a restart: minutes, not seconds, and no retry budget is spent.
MISSING_KEY_RECHECK_S = 300.0
MAX_FRAMES = 12
# Frames are named from here: `workers/engine.py`, or `httpx/_client.py` for a library.
_ROOTS = sorted(
    {str(Path(__file__).resolve().parents[1]), *(p for p in sys.path if p.startswith("/"))}, key=len, reverse=True
)


class Action(StrEnum):
    DEFER = "deferred"
    RETRY = "retry"
    FAIL = "failed"


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str  # for the operator: never a payload value
    kind: ErrorKind | None = None
    status_code: int | None = None
    wait_s: float | None = None  # None: the backoff decides
    slot: Slot | None = None  # the throttle slot reserved for the next try
    request_id: str | None = None  # the vendor's, when it answered
    trace: tuple[str, ...] = ()  # an unexpected error's frames, innermost last: where, never what
    vendor: str | None = None  # whose answer `reason` describes, when a vendor's
    call: str | None = None  # the same without the vendor's name

    def reason_for(self, destination: str) -> str:
        """The reason as a delivery to `destination` records it: its vendor is named once, as
        the destination, wherever the error is shown."""
        return self.call if self.call and self.vendor == destination else self.reason


def classify(exc: Exception) -> Verdict:
    if isinstance(exc, Deferred):
        return Verdict(Action.DEFER, exc.reason, wait_s=exc.wait_s, slot=exc.slot)
    if isinstance(exc, VendorError):
        if exc.kind == ErrorKind.THROTTLED:
            wait_s = THROTTLED_DEFAULT_WAIT_S if exc.retry_after is None else exc.retry_after
            return _vendor_verdict(Action.DEFER, exc, wait_s=wait_s)
        if exc.kind == ErrorKind.AUTH:  # the breaker is open for this account: wait for it
            return _vendor_verdict(Action.DEFER, exc, wait_s=AUTH_RECHECK_S)
        if exc.kind == ErrorKind.TRANSIENT:
            return _vendor_verdict(Action.RETRY, exc)
        return _vendor_verdict(Action.FAIL, exc)
    if isinstance(exc, SealedDataError):  # one process forgotten in a key rotation
        reason = (
            f"the payload is sealed with key id {exc.key_id}, which RELAY_PAYLOAD_KEYS of the worker on "
            f"{socket.gethostname()} does not hold: add that key there (the delivery waits)"
        )
        return Verdict(Action.DEFER, reason, kind=ErrorKind.MISSING_KEY, wait_s=MISSING_KEY_RECHECK_S)
    if isinstance(exc, DeliveryFailed):
        return Verdict(Action.FAIL, str(exc))
    if isinstance(exc, RetryLater):
        return Verdict(Action.RETRY, str(exc))
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):  # Relay's own Redis is away
        return Verdict(Action.RETRY, f"Redis unreachable ({type(exc).__name__})")
    # A bug or an unexpected library error: retry, then fail visibly. The class and the frames
    # say what went wrong where; the message may quote payload values, so it is left out.
    trace = frames(exc)
    where = f" at {trace[-1]}" if trace else ""
    log.error("delivery raised %s%s", type(exc).__name__, where)
    return Verdict(Action.RETRY, f"internal error ({type(exc).__name__}){where}", trace=trace)


def _vendor_verdict(action: Action, exc: VendorError, wait_s: float | None = None) -> Verdict:
    return Verdict(
        action,
        str(exc),
        kind=exc.kind,
        status_code=exc.status,
        wait_s=wait_s,
        request_id=exc.request_id,
        vendor=exc.vendor,
        call=exc.call_text(),
    )


def frames(exc: BaseException) -> tuple[str, ...]:
    """`file:line in function` for the innermost frames of the exception's traceback."""
    return tuple(
        f"{_short(frame.filename)}:{frame.lineno} in {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)[-MAX_FRAMES:]
    )


def _short(filename: str) -> str:
    for root in _ROOTS:
        if root and filename.startswith(root + "/"):
            return filename[len(root) + 1 :]
    return Path(filename).name


def backoff(failures: int, base_s: float) -> float:
    """Capped exponential backoff with "equal jitter": at least half the step, never ~0."""
    step = min(base_s * 2 ** max(failures - 1, 0), MAX_BACKOFF_S)
    return step / 2 + random.uniform(0, step / 2)
