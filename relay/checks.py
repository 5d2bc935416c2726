"""`relay doctor`'s result lines: the foundation's, so that each destination's own probe
(workers/<vendor>/) and the doctor's other checks (operations.doctor) say them alike."""

from __future__ import annotations

from dataclasses import dataclass

OK, WARNING, FAILED, NOT_CONFIGURED, SKIPPED = "ok", "warning", "failed", "not_configured", "skipped"
# A vendor probe is one harmless read, with a short timeout, straight to the vendor: it neither
# waits behind the shared throttle nor moves the breaker (a wrong key tried by hand must not put
# the workers' calls on hold).
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


def passed(name: str, detail: str) -> Check:
    return Check(name, OK, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, FAILED, detail, fix)


def warned(name: str, detail: str, fix: str) -> Check:
    return Check(name, WARNING, detail, fix)
