"""Per-subscriber locks in Redis: deliveries for one subscriber and vendor run one at a time
(two events for one new subscriber must not create two Spruce contacts). A short lease frees
the lock of a dead worker; a live run renews it (workers.lease)."""

from __future__ import annotations

import contextlib
import hashlib
from contextlib import contextmanager

import redis

from workers.outcomes import Deferred

LOCK_LEASE_S = 20


@contextmanager
def subject_locks(client: redis.Redis, destination: str, subject_keys: list[str]):
    held = []
    try:
        for key in sorted(set(subject_keys)):
            digest = hashlib.sha256(key.encode()).hexdigest()[:24]
            # Not thread-local: the lease keeper renews it from its own thread.
            lock = client.lock(
                f"relay:lock:{destination}:{digest}", timeout=LOCK_LEASE_S, blocking=False, thread_local=False
            )
            if not lock.acquire():
                raise Deferred(1.0, "another delivery for this subscriber is running")
            held.append(lock)
        yield held
    finally:
        for lock in held:
            with contextlib.suppress(redis.exceptions.LockError):  # the lease ran out first: nothing to release
                lock.release()
