"""The circuit breaker, per vendor account, kept in Redis so every process sees it: after
`threshold` transient failures in a row, or one rejected credential, stop calling for a
cool-down; then let one probe through; its success closes it."""

from __future__ import annotations

import logging
from typing import cast

import redis

from relay.metrics import Metrics
from relay.observability import report
from workers.outcomes import Deferred

log = logging.getLogger("relay.breaker")


class Breaker:
    def __init__(
        self,
        client: redis.Redis,
        account: str,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        auth_cooldown_s: float = 300.0,
        metrics: Metrics | None = None,
    ):
        self._client, self.account, self._metrics = client, account, metrics
        self.threshold, self.cooldown_s, self.auth_cooldown_s = threshold, cooldown_s, auth_cooldown_s
        base = f"relay:breaker:{account}"
        self._failures, self._open, self._probe = f"{base}:failures", f"{base}:open", f"{base}:probe"
        # Outlives the cool-down and marks the half-open phase.
        self._was_open = f"{self._open}:was"

    def check(self) -> bool:
        """Raise Deferred while open, or while another caller's probe runs; True when this
        caller holds the half-open probe (its call's outcome decides)."""
        # One round trip for both reads: this runs before every vendor call.
        reads = self._client.pipeline(transaction=False)
        reads.pttl(self._open)
        reads.exists(self._was_open)
        open_ms, was_open = reads.execute()
        if open_ms > 0:
            raise Deferred(open_ms / 1000, f"circuit open for {self.vendor}")
        if not was_open:
            return False
        if not self._client.set(self._probe, 1, nx=True, px=int(self.cooldown_s * 1000)):
            raise Deferred(2.0, f"circuit half-open for {self.vendor}: a probe is running")
        return True

    def release_probe(self) -> None:
        """The probe's call did not go out (the throttle deferred it): let the next caller probe."""
        self._client.delete(self._probe)

    def success(self) -> None:
        clears = self._client.pipeline(transaction=False)  # one round trip: after every call
        clears.delete(self._failures, self._probe)
        clears.delete(self._was_open)
        _, was_open = clears.execute()
        if was_open:
            log.warning("circuit closed for %s: calls resume", self.vendor, extra={"vendor": self.vendor})
            self._gauge(0)

    def failure(self, auth: bool = False) -> None:
        self._client.delete(self._probe)
        if auth:
            self._trip(self.auth_cooldown_s, "credential rejected (401/403)")
            return
        failures = cast(int, self._client.incr(self._failures))
        self._client.expire(self._failures, 600)
        if failures >= self.threshold:
            self._trip(self.cooldown_s, f"{failures} transient failures in a row")

    def state(self) -> str:
        if cast(int, self._client.pttl(self._open)) > 0:
            return "open"
        return "half-open" if self._client.exists(self._was_open) else "closed"

    def _trip(self, cooldown_s: float, why: str) -> None:
        self._client.set(self._open, 1, px=int(cooldown_s * 1000))
        if self._client.set(self._was_open, 1, nx=True, ex=86400):  # only its creator logs
            log.warning(
                "circuit opened for %s for %.0fs: %s", self.vendor, cooldown_s, why, extra={"vendor": self.vendor}
            )
            report(
                f"Relay stopped calling {self.vendor}: {why}",
                level="warning",
                tags={"vendor": self.vendor},
                fingerprint=["breaker-opened", self.vendor],
            )
            self._gauge(1)
        self._client.delete(self._failures)

    @property
    def vendor(self) -> str:
        return self.account.split(":")[0]

    def _gauge(self, value: int) -> None:
        if self._metrics is not None:
            self._metrics.set("relay_breaker_open", value, vendor=self.vendor)
