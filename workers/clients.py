"""One vendor client per process and credentials, so HTTP connections are reused across tasks."""
from __future__ import annotations

from functools import cache

from web.config import Config
from workers.sprig_client import SprigClient
from workers.spruce_client import SpruceClient


def sprig_client(config: Config) -> SprigClient:
    return _sprig(config.sprig_api_url, config.sprig_api_key or "", config.vendor_timeout_s)


def spruce_client(config: Config) -> SpruceClient:
    return _spruce(config.spruce_api_url, config.spruce_api_token or "", config.vendor_timeout_s)


@cache
def _sprig(base_url: str, api_key: str, timeout: float) -> SprigClient:
    return SprigClient(base_url, api_key, timeout=timeout)


@cache
def _spruce(base_url: str, api_token: str, timeout: float) -> SpruceClient:
    return SpruceClient(base_url, api_token, timeout=timeout)
