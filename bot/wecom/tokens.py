"""The WeCom access_token cache: one process's memory, one redis key shared by every process, or
both (memory first: a redis outage does not stop replies).

A token is used until ``TOKEN_MARGIN_S`` before it expires; the API client refreshes it then, and
again when a call answers 40014 (invalid) or 42001 (expired).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

TOKEN_MARGIN_S = 300.0  # refresh this long before the token expires

Clock = Callable[[], float]


@dataclass(frozen=True)
class CachedToken:
    token: str
    expires_at: float  # on the store's clock; the token is used until expires_at - margin


class TokenStore(Protocol):
    async def get(self) -> str | None: ...
    async def set(self, token: str, expires_in: float) -> None: ...


class MemoryTokenStore:
    """One process's token cache."""

    def __init__(self, *, margin_s: float = TOKEN_MARGIN_S, clock: Clock = time.monotonic) -> None:
        self._cached: CachedToken | None = None
        self._margin = margin_s
        self._clock = clock

    async def get(self) -> str | None:
        cached = self._cached
        if cached is None or self._clock() >= cached.expires_at - self._margin:
            return None
        return cached.token

    async def set(self, token: str, expires_in: float) -> None:
        self._cached = CachedToken(token, self._clock() + expires_in)


class RedisTokenStore:
    """A token cache shared by all processes through one redis key, expiring ``margin_s`` early."""

    def __init__(self, redis: Any, key: str, *, margin_s: float = TOKEN_MARGIN_S) -> None:
        self._redis = redis
        self.key = key
        self._margin = margin_s

    async def get(self) -> str | None:
        value = await self._redis.get(self.key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def set(self, token: str, expires_in: float) -> None:
        ttl = max(1, int(expires_in - self._margin))
        await self._redis.set(self.key, token, ex=ttl)


def token_key(corp_id: str, agent_id: int | str) -> str:
    return f"persona-studio:wecom:access_token:{corp_id}:{agent_id}"


class LayeredTokenStore:
    """This process's memory in front of a shared store (redis): a token this process holds is
    used while the shared store is unreachable, and a token fetched while redis is down is still
    kept here. Errors of the shared store are logged, never raised."""

    def __init__(self, shared: TokenStore, memory: MemoryTokenStore | None = None) -> None:
        self.shared = shared
        self.memory = memory or MemoryTokenStore()

    async def get(self) -> str | None:
        token = await self.memory.get()
        if token is not None:
            return token
        try:
            return await self.shared.get()
        except Exception as exc:
            log.warning("wecom: shared access_token cache unavailable (%s); using this process's", exc)
            return None

    async def set(self, token: str, expires_in: float) -> None:
        await self.memory.set(token, expires_in)
        try:
            await self.shared.set(token, expires_in)
        except Exception as exc:
            log.warning("wecom: could not share the access_token (%s); kept in this process", exc)
