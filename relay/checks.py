"""`relay doctor`'s result lines: the foundation's, so that each destination's own probe
(workers/<vendor>/) and the doctor's other checks (operations.doctor) say them alike."""

from __future__ import annotations

from dataclasses import dataclass

OK, WARNING, FAILED, NOT_CONFIGURED, SKIPPED = "ok", "warning", "failed", "not_configured", "skipped"


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
