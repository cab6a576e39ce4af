"""Lanes: items of one key handled in order, items of different keys concurrently.

A lane is a queue of one key's items and the one task that drains it; it exists only while its
key has items (the task ends, and the lane is gone, once its queue is empty), so a day of
thousands of keys leaves nothing behind. An item that arrives while its lane is busy may
replace the items still waiting there (``merge``): progress that a newer one supersedes is
never handled. An item whose handling raises is logged; its lane goes on with the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: (an item waiting in the lane, a newer item) -> the one item standing for both, or None: keep both
Merge = Callable[[T, T], T | None]


class Lanes(Generic[K, T]):
    def __init__(
        self, handle: Callable[[T], Awaitable[None]], *, merge: Merge[T] | None = None, name: str = "lane"
    ) -> None:
        self._handle = handle
        self._merge = merge
        self._name = name
        self._waiting: dict[K, deque[T]] = {}
        self._tasks: dict[K, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        """How many lanes are open (keys with items waiting or being handled)."""
        return len(self._tasks)

    def put(self, key: K, item: T) -> None:
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = deque([item])
            self._tasks[key] = asyncio.create_task(self._drain(key), name=f"{self._name}:{key}")
            return
        while waiting and self._merge is not None:
            merged = self._merge(waiting[-1], item)
            if merged is None:
                break
            waiting.pop()
            item = merged
        waiting.append(item)

    async def _drain(self, key: K) -> None:
        waiting = self._waiting[key]
        try:
            while waiting:
                item = waiting.popleft()
                try:
                    await self._handle(item)
                except Exception:
                    log.exception("%s: handling %s failed", self._name, item)
        finally:  # nothing awaits between the last check of the queue and this: no item is left behind
            self._waiting.pop(key, None)
            self._tasks.pop(key, None)

    async def join(self) -> None:
        """Wait until every lane has drained (and its task has ended)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()))

    async def close(self) -> None:
        """Cancel every lane; the items still waiting are dropped."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._waiting.clear()  # lanes whose task was cancelled before it first ran
        self._tasks.clear()
