"""What a Relay process runs with, built once per process (`Runtime.build`, by the base app
factory relay.app) and handed to the engine (workers/), the operations (operations/) and the web
app (`Runtime.of(app)`; the worker's signals take it from its Celery app, relay.queue.RelayCelery):
its configuration, its store, its Redis (REDIS_URL's, shared by every process; without it
an in-process fakeredis, correct for this process alone) and its metrics buffer. No module keeps
any of these: what a process holds is here.

A process that forks after building its runtime (Celery's prefork pool starting a pool process,
gunicorn with preload_app) gives the child the parent's objects. What the child must not share is
rebuilt, here and nowhere else (`_after_fork_in_child`):
- the store's connection pools (SQLAlchemy's recipe, dispose(close=False): new pools, the
  parent's sockets left to the parent);
- the metrics' unflushed counts (the parent adds them, not the child too) and their flushing
  thread (a fork has none; the child starts its own on its first count);
- the claims of running deliveries (the parent's runs are not the child's to hand back), and
  the missing payload keys it warned about (the child warns for itself);
- the objects kept with `shared` (the vendor clients, the lease keeper and its thread):
  dropped, and built again on first use.
redis-py rebuilds its own connection pool when it sees a new process id, so the Redis client
needs nothing. The destination registry (`destinations`: the configuration's, found with it,
since each destination declares settings of its own) holds no connection. Kept by the process on purpose,
fork or not: read-only things built once (the TLS roots, workers.vendor_http.tls_context; the
Celery app of `celery -A workers`, workers/__init__.py; logging and Sentry, set up once).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from flask import Flask
from sqlalchemy.orm import Session

from relay.config import Config
from relay.db import Database
from relay.destinations import Registry
from relay.metrics import Metrics
from relay.shared_redis import redis_client

EXTENSION = "relay.runtime"
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Runtime:
    config: Config
    db: Database
    redis: redis.Redis
    metrics: Metrics
    # The claims of the deliveries this process is running (workers.lease): what a stopping
    # worker hands back.
    running: set[Any] = field(default_factory=set)
    # The ids of payload keys this process lacks and has warned about (once each, not per delivery).
    warned_keys: set[str] = field(default_factory=set)
    _shared: dict[Hashable, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, config: Config) -> Runtime:
        client = redis_client(config.redis_url)
        runtime = cls(
            config=config,
            db=Database(config.database_url, config.payload_keys, config.lookup_key),
            redis=client,
            metrics=Metrics(client),
        )
        _rebuild_after_fork(runtime)
        return runtime

    @classmethod
    def of(cls, app: Flask) -> Runtime:
        """The runtime `relay.app.create_base_app` built for this app."""
        return app.extensions[EXTENSION]

    @property
    def destinations(self) -> Registry:
        return self.config.destinations

    @property
    def shares_redis(self) -> bool:
        """Whether the throttle, breaker and locks this process sees are every process's (REDIS_URL
        is set; without it, each process has its own in memory)."""
        return self.config.redis_url is not None

    def session(self) -> AbstractContextManager[Session]:
        return self.db.session()

    def shared(self, key: Hashable, build: Callable[[], T]) -> T:
        """This runtime's one object for `key` (a vendor client for an account, the lease keeper),
        built on first use; closed with the runtime."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    def close(self) -> None:
        """Flush the metrics, close what `shared` kept, the store's pools and Redis's."""
        self.metrics.close()
        for kept in self._shared.values():
            if callable(getattr(kept, "close", None)):
                kept.close()
        self._shared.clear()
        self.db.dispose()
        self.redis.close()

    def _after_fork_in_child(self) -> None:
        self.db.forget_connections()
        self.metrics.forget_inherited()
        self.running.clear()
        self.warned_keys.clear()
        self._shared.clear()


def _rebuild_after_fork(runtime: Runtime) -> None:
    ref = weakref.ref(runtime)

    def in_child() -> None:
        if (alive := ref()) is not None:
            alive._after_fork_in_child()

    os.register_at_fork(after_in_child=in_child)
