"""What a Relay process runs with: its configuration (REDIS_URL's Redis among it), its store and
its destinations (relay.destinations, found once by the configuration: what they read is part
of it), built once per process by the base app factory (relay.app) and handed to the operations
(operations/) by the interfaces that call them."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from flask import Flask
from sqlalchemy.orm import Session

from relay.config import Config
from relay.db import Database
from relay.destinations import Registry

EXTENSION = "relay.runtime"


@dataclass(frozen=True)
class Runtime:
    config: Config
    db: Database

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
        is set; without it, relay.shared_redis gives each process its own in memory)."""
        return self.config.redis_url is not None

    def session(self) -> AbstractContextManager[Session]:
        return self.db.session()
