"""How ``supervise_redis_url`` becomes a Redis client: one place for every topology.

Today: a single server (``redis://``, ``rediss://``, ``unix://``). Redis Cluster and
Sentinel (SPEC section 7) plug in here, so the runtime, the CLI and the test plugin build
their clients the same way.
"""

from __future__ import annotations

from typing import Any

import redis

__all__ = ["connect"]


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for ``url`` with redis-py keyword ``options``."""
    return redis.Redis.from_url(url, **options)
