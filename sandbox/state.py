"""The sandbox's memory: vendor records, switches, rate-limit budgets (sandbox.budget),
idempotency keys and the request log. One lock guards all of it; nothing sleeps or does I/O while holding it. The vendor
modules mutate the record dicts directly, inside `with state.lock:`."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import secrets
import string
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import switches
from sandbox.budget import Budget, Window

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_REQUEST_ID_ALPHABET = string.ascii_uppercase + string.digits
_PENDING = math.inf  # an idempotency key whose first request is still running: taken
# What a saved state keeps: the vendors' records (and, below, the ids handed out and Spruce's
# idempotency keys), not the switches, rate-limit windows or request log, which a restart resets.
RECORDS = {
    "sprig_users": dict,
    "sprig_purges": list,
    "contacts": dict,
    "conversations": dict,
    "items": dict,
    "sparkloop_subscribers": dict,
    "sparkloop_webhooks": dict,
}
SAVED_VERSION = 1

log = logging.getLogger("sandbox")


@dataclass
class SandboxSettings:
    sprig_api_key: str = "sandbox-sprig-key"
    spruce_api_token: str = "sandbox-spruce-token"
    # Sprig: 1000 per 5 minutes per API key (https://docs.sprig.com/docs/apis).
    sprig_rate_limit: int = 1000  # requests per window per API key
    sprig_rate_window_s: float = 300
    # Spruce: per organization, no published figure; 100 is only its reference's example value
    # (https://developer.sprucehealth.com/docs/overview).
    spruce_rate_limit: int = 100  # requests per window per organization
    spruce_rate_window_s: float = 60
    spruce_daily_limit: int | None = None
    spruce_day_s: float = switches.DAY_S  # the daily window's length: shorter in drills
    sparkloop_api_key: str = "sandbox-sparkloop-key"
    # SparkLoop: 60 per rolling 60 s per API key; newer versions of the page say 120
    # (https://docs.sparkloop.app).
    sparkloop_rate_limit: int = 60  # requests per window per API key
    sparkloop_rate_window_s: float = 60
    idempotency_ttl_s: float = switches.DAY_S
    request_log_size: int = 10_000
    # A JSON file the records are kept in, read at start and written after every change: a
    # restarted sandbox still knows the ids Relay stored (`relay dev`). None: memory only.
    state_file: str | None = None


def new_request_id() -> str:
    return "".join(secrets.choice(_REQUEST_ID_ALPHABET) for _ in range(26))


class SandboxState:
    def __init__(self, settings: SandboxSettings):
        self.settings = settings
        self.lock = threading.RLock()
        # Ids are never reused, not even across reset(): Relay may still hold ids it saw earlier.
        self._last_id = 0
        self.reset()

    # --- lifecycle and switches -----------------------------------------------------------

    def reset(self) -> None:
        """Forget every record, key, window, counter and switch."""
        with self.lock:
            self.sprig_users: dict[str, dict] = {}
            self.sprig_purges: list[dict] = []  # POST /v2/purge/visitors jobs, oldest first
            self.contacts: dict[str, dict] = {}
            self.conversations: dict[str, dict] = {}
            self.items: dict[str, list[dict]] = {}
            self.sparkloop_subscribers: dict[str, dict] = {}  # by uuid, in insertion order
            self.sparkloop_webhooks: dict[str, dict] = {}  # by uuid, in creation order
            self._visible_at: dict[str, float] = {}
            self._idempotency: dict[tuple[str, str], float] = {}  # (path, key) -> expires
            self._requests: deque[dict] = deque(maxlen=self.settings.request_log_size)
            self._counts: Counter[tuple[str, int]] = Counter()
            self._config = switches.defaults(self.settings)
            now = time.monotonic()
            self._budgets = {vendor: Budget(self._config["rate_limit"][vendor], now) for vendor in switches.VENDORS}

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply a partial update (see switches.merge); returns the resulting configuration."""
        with self.lock:
            merged = switches.merge(self._config, changes)
            now = time.monotonic()
            for vendor, limits in (changes.get("rate_limit") or {}).items():
                if set(limits) - {switches.OTHER_INTEGRATION}:  # new limits start with fresh windows
                    self._budgets[vendor] = Budget(merged["rate_limit"][vendor], now)
                else:  # the other integration alone: the windows go on
                    self._budgets[vendor].pace_other(merged["rate_limit"][vendor][switches.OTHER_INTEGRATION], now)
            self._config = merged
            return copy.deepcopy(merged)

    def config(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._config)

    def latency_s(self, vendor: str) -> float:
        with self.lock:
            return self._config["latency_ms"][vendor] / 1000

    # --- ids and eventual consistency -----------------------------------------------------

    def new_id(self, prefix: str) -> str:
        """`<prefix>_<11 base32 chars>`: unique and sortable by creation, as Spruce's entity
        ids seem to be (inferred; Spruce documents only that structured searches sort by entity
        id ascending: https://developer.sprucehealth.com/reference/searchcontacts)."""
        with self.lock:
            self._last_id = max(self._last_id + 1, time.time_ns() // 1000)
            value, chars = self._last_id, []
            for _ in range(11):
                value, digit = divmod(value, 32)
                chars.append(_CROCKFORD[digit])
            return f"{prefix}_{''.join(reversed(chars))}"

    def hide_for_a_while(self, key: str, kind: str) -> None:
        """Keep record `key` out of `kind` listings for the configured visibility delay."""
        with self.lock:
            delay_ms = self._config["visibility_delay_ms"][kind]
            if delay_ms:
                self._visible_at[f"{kind}:{key}"] = time.monotonic() + delay_ms / 1000

    def visible(self, key: str, kind: str) -> bool:
        with self.lock:
            return self._visible_at.get(f"{kind}:{key}", 0.0) <= time.monotonic()

    # --- rate limits, faults --------------------------------------------------------------

    def count_request(self, vendor: str) -> Window:
        """Count one request against the vendor's windows (per key / per organization: the
        sandbox accepts one credential per vendor). A refused request is not counted."""
        with self.lock:
            return self._budgets[vendor].spend(time.monotonic())

    def budgets(self) -> dict[str, dict[str, Any]]:
        """Each vendor's rate-limit windows and what was spent in them, by Relay and by the other
        integration, since its limits were last set (sandbox.budget.Budget.shown)."""
        with self.lock:
            now = time.monotonic()
            return {vendor: budget.shown(now) for vendor, budget in self._budgets.items()}

    def take_fault(self, vendor: str, method: str, path: str) -> dict | None:
        """The first configured fault matching this request, with one use spent."""
        with self.lock:
            for fault in self._config["faults"]:
                if (
                    fault["vendor"] == vendor
                    and fault["method"] in (None, method)
                    and path.startswith(fault["path_prefix"])
                    and fault["path"] in (None, path)
                ):
                    if fault["times"] is not None:
                        fault["times"] -= 1
                        if fault["times"] == 0:
                            self._config["faults"].remove(fault)
                    return dict(fault)
        return None

    # --- idempotency (Spruce) -------------------------------------------------------------

    def reserve_idempotency_key(self, path: str, key: str) -> bool:
        """False if the key was already used on this path within the TTL, or its first request
        is still running (so two concurrent duplicates cannot both succeed)."""
        now = time.time()
        with self.lock:
            expires = self._idempotency.get((path, key))
            if expires is not None and expires > now:
                return False
            self._idempotency[(path, key)] = _PENDING
            return True

    def settle_idempotency_key(self, path: str, key: str, succeeded: bool) -> None:
        """Only a successful request burns its key; a failed one may be retried with it."""
        with self.lock:
            if succeeded:
                self._idempotency[(path, key)] = time.time() + self._config["idempotency_ttl_s"]
            else:
                self._idempotency.pop((path, key), None)

    # --- SparkLoop subscribers ------------------------------------------------------------

    def sparkloop_newest_first(self) -> list[dict]:
        """SparkLoop lists by created_at descending
        (https://docs.sparkloop.app/api-v2/endpoints/subscribers); among equal times, the one added
        last comes first. `created_at` is stored normalised, so strings sort as times."""
        with self.lock:
            latest_added_first = [dict(row) for row in reversed(self.sparkloop_subscribers.values())]
            return sorted(latest_added_first, key=lambda s: s["created_at"], reverse=True)

    # --- saving and restoring -----------------------------------------------------------

    def saved(self) -> dict[str, Any]:
        """What a restart keeps, as JSON-ready data (see RECORDS)."""
        now = time.time()
        with self.lock:
            return copy.deepcopy(
                {
                    "version": SAVED_VERSION,
                    "last_id": self._last_id,
                    "records": {name: getattr(self, name) for name in RECORDS},
                    "idempotency": [
                        [path, key, expires]
                        for (path, key), expires in self._idempotency.items()
                        if expires != _PENDING and expires > now
                    ],
                }
            )

    def restore(self, saved: Any) -> None:
        """Replace the records with `saved` (from saved()); the switches start at their defaults.
        Raises ValueError, changing nothing, when `saved` is not such data."""
        if not isinstance(saved, dict) or saved.get("version") != SAVED_VERSION:
            raise ValueError(f"not a saved sandbox state of version {SAVED_VERSION}")
        records, keys, last_id = saved.get("records"), saved.get("idempotency"), saved.get("last_id")
        if (
            not isinstance(records, dict)
            or not isinstance(keys, list)
            or not isinstance(last_id, int)
            or any(not isinstance(records.get(name), kind) for name, kind in RECORDS.items())
        ):
            raise ValueError("a saved sandbox state needs version, last_id, records and idempotency")
        if any(not (isinstance(k, list) and len(k) == 3 and isinstance(k[2], (int, float))) for k in keys):
            raise ValueError("a saved idempotency key is [path, key, expires]")
        with self.lock:
            self.reset()
            for name in RECORDS:
                setattr(self, name, copy.deepcopy(records[name]))
            self._idempotency = {(path, key): float(expires) for path, key, expires in keys}
            self._last_id = max(self._last_id, last_id)

    # --- request log and read-outs --------------------------------------------------------

    def log_request(self, entry: dict) -> None:
        with self.lock:
            self._requests.append(entry)
            self._counts[(entry["vendor"], entry["status"])] += 1

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests per vendor and status since the last reset (not bounded by the log size)."""
        with self.lock:
            counts: dict[str, dict[str, int]] = {}
            for (vendor, status), n in sorted(self._counts.items()):
                counts.setdefault(vendor, {})[str(status)] = n
            return counts

    def snapshot(self) -> dict[str, Any]:
        """Everything the vendors hold, including records not yet visible to reads."""
        with self.lock:
            return copy.deepcopy(
                {
                    "sprig": {
                        "users": {
                            user_id: {
                                "id": user["id"],
                                "createdAt": user["createdAt"],
                                "emailAddress": user.get("emailAddress"),
                                "attributes": user["attributes"],
                                "events": list(user["events"].values()),
                            }
                            for user_id, user in self.sprig_users.items()
                        },
                        "purges": self.sprig_purges,
                    },
                    "spruce": {
                        "contacts": sorted(self.contacts.values(), key=lambda c: c["id"]),
                        "conversations": sorted(self.conversations.values(), key=lambda c: c["id"]),
                        "items": self.items,
                    },
                    "sparkloop": {"subscribers": self.sparkloop_newest_first()},
                    "requests": list(self._requests),
                    "budgets": self.budgets(),
                }
            )


class StateFile:
    """A sandbox's records in a JSON file (SandboxSettings.state_file): loaded at start, saved
    after each change and at stop. Written whole to a temporary file, then renamed over the old
    one, so a sandbox killed mid-write leaves the previous state, never half of one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._writing = threading.Lock()  # one writer at a time, so a newer state is never overwritten

    def load(self, state: SandboxState) -> None:
        """Restore `state` from the file, if there is one. An unreadable file is renamed aside
        (`<name>.unreadable`) and the sandbox starts empty, saying so."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        try:
            state.restore(json.loads(text))
        except ValueError as exc:  # a JSON error is one too
            aside = self.path.with_name(self.path.name + ".unreadable")
            os.replace(self.path, aside)
            log.error("sandbox: its state file could not be read (%s): starting empty; the file is now %s", exc, aside)

    def save(self, state: SandboxState) -> None:
        with self._writing:
            text = json.dumps(state.saved())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, self.path)

    def remove(self) -> bool:
        """Delete the file (`relay dev --fresh`); True if there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
