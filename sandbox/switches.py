"""The sandbox's switches (latency, rate limits and another integration spending Spruce's, faults,
eventual consistency, idempotency TTL):
their defaults and the validation of partial updates. Pure functions; SandboxState applies them
under its lock, and both the control API and RunningSandbox.configure() go through here."""

from __future__ import annotations

import copy
from typing import Any

VENDORS = ("sprig", "spruce", "sparkloop")
DAY_S = 24 * 3600
DEFAULT_TIMEOUT_DELAY_S = 5.0
# Spruce counts every integration of an organization against one budget: this one's calls, one
# every so many seconds, come out of the same windows as Relay's (sandbox.budget).
OTHER_INTEGRATION = "other_integration_every_s"
SPRUCE_LIMITS = ("limit", "window_s", "daily_limit", "day_s", OTHER_INTEGRATION)
# Reads that lag behind writes: Sprig processes upserts asynchronously
# (https://docs.sprig.com/reference/sprig-api/v2/post-user-v2-1); Spruce's conversation and item
# listings are eventually consistent (https://developer.sprucehealth.com/reference/listconversations,
# https://developer.sprucehealth.com/reference/conversationitems). A lagging search index is our
# assumption; Spruce does not document one.
VISIBILITY_KINDS = ("sprig_users", "spruce_search", "spruce_conversations", "spruce_items")
FAULT_FIELDS = {
    "vendor",
    "status",
    "times",
    "method",
    "path_prefix",
    "path",
    "when",
    "delay_s",
    "retry_after",
    "type",
    "message",
    "echo",
}


def defaults(settings) -> dict[str, Any]:
    return {
        "latency_ms": {vendor: 0 for vendor in VENDORS},
        "rate_limit": {
            "sprig": {"limit": settings.sprig_rate_limit, "window_s": settings.sprig_rate_window_s},
            "spruce": {
                "limit": settings.spruce_rate_limit,
                "window_s": settings.spruce_rate_window_s,
                "daily_limit": settings.spruce_daily_limit,
                "day_s": settings.spruce_day_s,
                OTHER_INTEGRATION: None,
            },
            "sparkloop": {"limit": settings.sparkloop_rate_limit, "window_s": settings.sparkloop_rate_window_s},
        },
        "faults": [],
        "visibility_delay_ms": {kind: 0 for kind in VISIBILITY_KINDS},
        "idempotency_ttl_s": settings.idempotency_ttl_s,
    }


def merge(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The configuration after a partial update. Raises ValueError, changing nothing, if any
    part of `changes` is invalid. `faults` replaces the whole list (`[]` clears it)."""
    if not isinstance(changes, dict):
        raise ValueError("configuration must be a JSON object")
    unknown = set(changes) - set(current)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    merged = copy.deepcopy(current)
    if "latency_ms" in changes:
        for vendor, ms in _mapping(changes["latency_ms"], "latency_ms", VENDORS).items():
            merged["latency_ms"][vendor] = _number(ms, f"latency_ms.{vendor}", minimum=0)
    if "rate_limit" in changes:
        for vendor, limits in _mapping(changes["rate_limit"], "rate_limit", VENDORS).items():
            merged["rate_limit"][vendor].update(_rate_limit(vendor, limits))
    if "faults" in changes:
        if not isinstance(changes["faults"], list):
            raise ValueError("faults must be a list")
        merged["faults"] = [_fault(raw, n) for n, raw in enumerate(changes["faults"])]
    if "visibility_delay_ms" in changes:
        delays = _mapping(changes["visibility_delay_ms"], "visibility_delay_ms", VISIBILITY_KINDS)
        for kind, ms in delays.items():
            merged["visibility_delay_ms"][kind] = _number(ms, f"visibility_delay_ms.{kind}", minimum=0)
    if "idempotency_ttl_s" in changes:
        merged["idempotency_ttl_s"] = _number(changes["idempotency_ttl_s"], "idempotency_ttl_s", minimum=0)
    return merged


def _rate_limit(vendor: str, limits: Any) -> dict[str, Any]:
    allowed = SPRUCE_LIMITS if vendor == "spruce" else ("limit", "window_s")
    limits = _mapping(limits, f"rate_limit.{vendor}", allowed)
    checked: dict[str, Any] = {}
    if "limit" in limits:
        checked["limit"] = _integer(limits["limit"], f"rate_limit.{vendor}.limit", minimum=0)
    if "window_s" in limits:
        checked["window_s"] = _number(limits["window_s"], f"rate_limit.{vendor}.window_s", minimum=0.001)
    if "daily_limit" in limits:
        daily = limits["daily_limit"]
        checked["daily_limit"] = None if daily is None else _integer(daily, "rate_limit.spruce.daily_limit", minimum=0)
    if "day_s" in limits:
        checked["day_s"] = _number(limits["day_s"], "rate_limit.spruce.day_s", minimum=0.001)
    if OTHER_INTEGRATION in limits:
        every = limits[OTHER_INTEGRATION]
        checked[OTHER_INTEGRATION] = (
            None if every is None else _number(every, f"rate_limit.spruce.{OTHER_INTEGRATION}", minimum=0.001)
        )
    return checked


def _fault(raw: Any, n: int) -> dict[str, Any]:
    where = f"faults[{n}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object")
    unknown = set(raw) - FAULT_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
    if raw.get("vendor") not in VENDORS:
        raise ValueError(f"{where}.vendor must be one of {', '.join(VENDORS)}")
    status = raw.get("status")
    if status != "timeout" and not (isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599):
        raise ValueError(f'{where}.status must be an HTTP error status (400-599) or "timeout"')
    times = raw.get("times", 1)
    if times is not None:
        times = _integer(times, f"{where}.times", minimum=1)
    method = raw.get("method")
    if method is not None and not isinstance(method, str):
        raise ValueError(f"{where}.method must be a string or null")
    path_prefix = raw.get("path_prefix") or ""
    if not isinstance(path_prefix, str):
        raise ValueError(f"{where}.path_prefix must be a string")
    path = raw.get("path")
    if path is not None and not isinstance(path, str):
        raise ValueError(f"{where}.path must be a string or null")
    when = raw.get("when", "before")
    if when not in ("before", "after"):
        raise ValueError(f'{where}.when must be "before" or "after"')
    retry_after = raw.get("retry_after")
    if retry_after is not None:
        retry_after = _integer(retry_after, f"{where}.retry_after", minimum=0)
    for text_field in ("type", "message"):
        if raw.get(text_field) is not None and not isinstance(raw[text_field], str):
            raise ValueError(f"{where}.{text_field} must be a string")
    if not isinstance(raw.get("echo", False), bool):
        raise ValueError(f"{where}.echo must be true or false")
    return {
        "vendor": raw["vendor"],
        "status": status,
        "times": times,
        "method": method.upper() if method else None,
        "path_prefix": path_prefix,
        "path": path,
        "when": when,
        "delay_s": _number(raw.get("delay_s", DEFAULT_TIMEOUT_DELAY_S), f"{where}.delay_s", minimum=0),
        "retry_after": retry_after,
        "type": raw.get("type"),
        "message": raw.get("message"),
        "echo": raw.get("echo", False),
    }


def _mapping(value: Any, name: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object")
    unknown = set(value) - set(allowed)
    if unknown:
        raise ValueError(f"{name}: unknown keys {', '.join(sorted(unknown))} (expected {', '.join(allowed)})")
    return value


def _number(value: Any, name: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{name} must be a number >= {minimum:g}")
    return value


def _integer(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}")
    return value
