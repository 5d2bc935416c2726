"""One vendor client per process and account, so HTTP connections are reused across tasks,
each guarded by the account's shared throttle and circuit breaker."""
from __future__ import annotations

from functools import cache

from web.config import Config, RateLimit
from workers.coordination import Breaker, Guard, Throttle, account_key, redis_client
from workers.sparkloop_client import SparkLoopClient
from workers.sprig_client import SprigClient
from workers.spruce_client import SpruceClient


def sprig_client(config: Config) -> SprigClient:
    return _sprig(config.sprig_api_url, config.sprig_api_key or "", config.vendor_timeout_s,
                  config.redis_url, config.sprig_rate_limit, config.breaker_cooldown_s)


def spruce_client(config: Config) -> SpruceClient:
    return _spruce(config.spruce_api_url, config.spruce_api_token or "", config.vendor_timeout_s,
                   config.redis_url, config.spruce_rate_limit, config.breaker_cooldown_s)


def sparkloop_client(config: Config) -> SparkLoopClient:
    return _sparkloop(config.sparkloop_api_url, config.sparkloop_api_key or "", config.vendor_timeout_s,
                      config.redis_url, config.sparkloop_rate_limit, config.breaker_cooldown_s)


def destination_clients(config: Config) -> dict[str, SprigClient | SpruceClient]:
    """The client of each destination that has credentials."""
    makers = {"sprig": sprig_client, "spruce": spruce_client}
    return {destination: makers[destination](config) for destination in sorted(config.configured_destinations)}


def guard(vendor: str, credential: str, redis_url: str | None, rate: RateLimit,
          cooldown_s: float) -> Guard:
    client, account = redis_client(redis_url), account_key(vendor, credential)
    return Guard(Throttle(client, account, rate), Breaker(client, account, cooldown_s=cooldown_s))


@cache
def _sprig(base_url, api_key, timeout, redis_url, rate, cooldown_s) -> SprigClient:
    return SprigClient(base_url, api_key, timeout=timeout,
                       guard=guard("sprig", api_key, redis_url, rate, cooldown_s))


@cache
def _spruce(base_url, api_token, timeout, redis_url, rate, cooldown_s) -> SpruceClient:
    return SpruceClient(base_url, api_token, timeout=timeout,
                        guard=guard("spruce", api_token, redis_url, rate, cooldown_s))


@cache
def _sparkloop(base_url, api_key, timeout, redis_url, rate, cooldown_s) -> SparkLoopClient:
    return SparkLoopClient(base_url, api_key, timeout=timeout,
                           guard=guard("sparkloop", api_key, redis_url, rate, cooldown_s))
