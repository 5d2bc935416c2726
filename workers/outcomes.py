"""The outcome classes of a vendor call or a delivery step, before `workers.classify` decides
what each means for the delivery."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What a failed vendor call means (see `workers.vendor_errors.classify_status`), or a
    delivery that this process cannot run."""

    TRANSIENT = "transient"  # retry with backoff: timeouts, connection errors, 5xx, 408, 409, 425
    THROTTLED = "throttled"  # wait as told, no attempt spent: 429, 503 with a reset hint
    PERMANENT = "permanent"  # record and stop: other 4xx, validation errors
    AUTH = "auth"  # the credential is wrong or revoked: 401, 403
    DUPLICATE = "duplicate"  # Spruce 422 for a reused idempotency key: the first attempt landed
    MISSING_KEY = "missing_key"  # the payload was sealed with a key this process lacks: wait for it


class Deferred(Exception):
    """Not now, and not a failure: try again after `wait_s`. `slot`, when set, is the throttle
    slot reserved for that next try."""

    def __init__(self, wait_s: float, reason: str, slot=None):
        super().__init__(reason)
        self.wait_s = max(wait_s, 0.05)
        self.reason = reason
        self.slot = slot


class DeliveryFailed(Exception):
    """Permanent: retrying cannot help (e.g. the payload names no subscriber). Message has no PII."""


class RetryLater(Exception):
    """Transient condition found by Relay itself (e.g. a created contact not yet searchable)."""
