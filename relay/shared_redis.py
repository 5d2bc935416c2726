"""The Redis every process shares (REDIS_URL): the broker, and the throttle, breaker, locks and
metrics kept beside it. `relay dev` sets one of its own (served from its process, see
web.cli.dev). Without REDIS_URL at all, an in-process fakeredis: correct for the one runtime
that holds it, not across processes. A process's client is its runtime's (relay.runtime)."""

from __future__ import annotations

import redis


def redis_client(url: str | None) -> redis.Redis:
    """A new client (with its own connection pool) of the Redis at `url`."""
    if url is None:
        import fakeredis

        return fakeredis.FakeRedis()
    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
