"""The sandbox's memory: vendor records, switches, rate-limit windows and the request log.
One lock guards it all; nothing sleeps while holding it."""
from __future__ import annotations

import copy
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class SandboxSettings:
    sprig_api_key: str = "sandbox-sprig-key"
    spruce_api_token: str = "sandbox-spruce-token"
    sprig_rate_limit: dict = field(default_factory=lambda: {"limit": 1000, "window_s": 300})
    spruce_rate_limit: dict = field(
        default_factory=lambda: {"limit": 100, "window_s": 60, "daily_limit": None})


IDEMPOTENCY_TTL_S = 24 * 3600
REQUEST_LOG_SIZE = 10_000


class SandboxState:
    def __init__(self, settings: SandboxSettings):
        self.settings = settings
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.sprig_users: dict[str, dict] = {}
            self.contacts: dict[str, dict] = {}
            self.conversations: dict[str, dict] = {}
            self.items: dict[str, list[dict]] = {}
            self.idempotency: dict[tuple, float] = {}
            self.windows: dict[tuple, list] = {}
            self.faults: list[dict] = []
            self.latency_ms = {"sprig": 0, "spruce": 0}
            self.rate_limit = {"sprig": dict(self.settings.sprig_rate_limit),
                               "spruce": dict(self.settings.spruce_rate_limit)}
            self.requests: deque[dict] = deque(maxlen=REQUEST_LOG_SIZE)
            self._counter = 0

    def configure(self, changes: dict) -> None:
        with self.lock:
            for vendor, ms in (changes.get("latency_ms") or {}).items():
                self.latency_ms[vendor] = float(ms)
            for vendor, limits in (changes.get("rate_limit") or {}).items():
                self.rate_limit[vendor].update(limits)
                self.windows = {k: v for k, v in self.windows.items() if k[0] != vendor}
            if "faults" in changes:
                self.faults = [dict(f) for f in changes["faults"]]

    def next_id(self, prefix: str) -> str:
        # Ids grow with creation order, so "lowest id" means "oldest", as in Spruce.
        with self.lock:
            self._counter += 1
            return f"{prefix}_{self._counter:010d}"

    def take_fault(self, vendor: str, method: str, path: str) -> dict | None:
        with self.lock:
            for fault in self.faults:
                if (fault.get("vendor") == vendor
                        and fault.get("method", method).upper() == method
                        and path.startswith(fault.get("path_prefix", ""))):
                    if fault.get("times") is not None:
                        if fault["times"] <= 0:
                            continue
                        fault["times"] -= 1
                    return dict(fault)
        return None

    def count_request(self, vendor: str, credential: str) -> dict:
        """Count one call against the vendor's windows; say whether it is allowed."""
        now = time.time()
        limits = self.rate_limit[vendor]
        with self.lock:
            result = self._window(vendor, credential, "minute", limits["limit"], limits["window_s"], now)
            if limits.get("daily_limit"):
                daily = self._window(vendor, credential, "day", limits["daily_limit"], 86400, now)
                result["daily_limit"], result["daily_remaining"] = daily["limit"], daily["remaining"]
                if not daily["allowed"]:
                    result.update(allowed=False, reset_after=daily["reset_after"])
            return result

    def _window(self, vendor, credential, name, limit, window_s, now) -> dict:
        key = (vendor, credential, name)
        start, count = self.windows.get(key, (now, 0))
        if now - start >= window_s:
            start, count = now, 0
        allowed = count < limit
        if allowed:
            count += 1
        self.windows[key] = (start, count)
        return {"allowed": allowed, "limit": limit, "remaining": max(limit - count, 0),
                "reset_after": max(1, int(start + window_s - now + 0.999))}

    def claim_idempotency_key(self, credential: str, path: str, key: str) -> bool:
        now = time.time()
        with self.lock:
            expires = self.idempotency.get((credential, path, key))
            return expires is None or expires < now

    def store_idempotency_key(self, credential: str, path: str, key: str) -> None:
        with self.lock:
            self.idempotency[(credential, path, key)] = time.time() + IDEMPOTENCY_TTL_S

    def log_request(self, entry: dict) -> None:
        with self.lock:
            self.requests.append(entry)

    def snapshot(self) -> dict:
        with self.lock:
            return copy.deepcopy({
                "sprig": {"users": {
                    user_id: {"emailAddress": u.get("emailAddress"), "attributes": u["attributes"],
                              "events": list(u["events"].values())}
                    for user_id, u in self.sprig_users.items()}},
                "spruce": {"contacts": list(self.contacts.values()),
                           "conversations": list(self.conversations.values()),
                           "items": self.items},
                "requests": list(self.requests),
            })

    def stats(self) -> dict:
        with self.lock:
            counts: dict[str, dict[str, int]] = {}
            for r in self.requests:
                per_vendor = counts.setdefault(r["vendor"], {})
                per_vendor[str(r["status"])] = per_vendor.get(str(r["status"]), 0) + 1
            return counts
