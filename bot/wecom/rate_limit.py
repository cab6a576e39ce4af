"""WeCom's per-user send limit (about 30 messages a minute), as a sliding window per user."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from cachetools import TTLCache

USER_LIMIT_PER_MINUTE = 30
MAX_TRACKED_USERS = 100_000

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """At most ``limit`` messages per user in any ``period`` seconds (a sliding window).

    ``acquire`` waits for a slot; ``try_acquire`` takes one only if ``reserve`` more would still
    be left, so optional messages never eat the budget of results. A user's window is forgotten
    ``period`` seconds after their last message (it is empty by then). Clock and sleep are
    injectable for tests.
    """

    def __init__(
        self,
        limit: int = USER_LIMIT_PER_MINUTE,
        period: float = 60.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._sent: TTLCache[str, deque[float]] = TTLCache(MAX_TRACKED_USERS, period, timer=clock)

    def _window(self, user: str, now: float) -> deque[float]:
        window = self._sent.get(user)
        if window is None:
            window = deque()
        while window and window[0] <= now - self.period:
            window.popleft()
        return window

    def delay(self, user: str) -> float:
        """Seconds until ``user`` may be sent one more message (0 = now)."""
        now = self._clock()
        window = self._window(user, now)
        if len(window) < self.limit:
            return 0.0
        return max(0.0, window[0] + self.period - now)

    def try_acquire(self, user: str, *, reserve: int = 0) -> bool:
        now = self._clock()
        window = self._window(user, now)
        if len(window) + 1 + reserve > self.limit:
            return False
        window.append(now)
        self._sent[user] = window  # kept for ``period`` seconds from this message
        return True

    async def acquire(self, user: str) -> float:
        """Take a slot, waiting as long as needed; returns the seconds waited."""
        waited = 0.0
        while not self.try_acquire(user):
            wait = self.delay(user)
            waited += wait
            await self._sleep(wait if wait > 0 else 0.001)
        return waited
