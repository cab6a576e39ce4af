"""Each WeCom callback handled once: WeCom retries a callback it did not see answered in 5 s.

The key is the MsgId, or FromUserName + CreateTime for events (WeCom's documented keys). With
REDIS_URL set, a claim is ``SET key 1 NX EX ttl`` so every process shares it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from cachetools import TTLCache

DEDUPE_TTL_S = 3600.0  # WeCom's retries come within seconds; keep keys well beyond that


class Dedupe(Protocol):
    async def claim(self, key: str) -> bool:
        """True the first time ``key`` is seen within the TTL, False for a repeat."""
        ...


class MemoryDedupe:
    """Keys seen in the last ``ttl_s`` seconds, at most ``max_keys`` of them (oldest dropped)."""

    def __init__(
        self, ttl_s: float = DEDUPE_TTL_S, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._seen: TTLCache[str, bool] = TTLCache(max_keys, ttl_s, timer=clock)

    async def claim(self, key: str) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = True
        return True


class RedisDedupe:
    """``SET key 1 NX EX ttl``: one claim across every process sharing the redis."""

    def __init__(self, redis: Any, prefix: str, ttl_s: float = DEDUPE_TTL_S) -> None:
        self._redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    async def claim(self, key: str) -> bool:
        return bool(await self._redis.set(f"{self.prefix}{key}", b"1", nx=True, ex=int(self.ttl_s)))
