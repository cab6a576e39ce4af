"""Job progress events: published by workers, read by front ends.

An event is a small JSON dict: ``{"job_id", "state", "step", "total", "eta_s", "position",
"error"}`` with state one of queued, running, done, failed, cancelled. Every publish also
stores the job's "last state", so a reader that subscribes late still sees where a job is.

Two buses with one interface: :class:`LocalBus` (in-process, the embedded queue) and
:class:`RedisBus` (redis pub/sub plus a last-state key per job, for arq workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

CHANNEL = "persona-studio:events"
LAST_STATE_KEY = "persona-studio:job:{job_id}"
LAST_STATE_TTL_S = 7 * 24 * 3600
FINISHED_STATES = frozenset({"done", "failed", "cancelled"})

Event = dict[str, Any]


def make_event(job_id: str, state: str, **fields: Any) -> Event:
    return {"job_id": job_id, "state": state, "ts": time.time(), **fields}


class ProgressBus(Protocol):
    async def publish(self, event: Event) -> None: ...

    async def last(self, job_id: str) -> Event | None: ...

    def subscribe(self) -> AsyncIterator[Event]: ...

    async def close(self) -> None: ...


class LocalBus:
    """In-process fan-out: every subscriber gets every event, in order."""

    def __init__(self, keep_last: int = 10_000) -> None:
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._last: OrderedDict[str, Event] = OrderedDict()
        self._keep_last = keep_last

    async def publish(self, event: Event) -> None:
        self._last[event["job_id"]] = event
        self._last.move_to_end(event["job_id"])
        while len(self._last) > self._keep_last:
            self._last.popitem(last=False)
        for queue in list(self._subscribers):
            queue.put_nowait(event)

    async def last(self, job_id: str) -> Event | None:
        return self._last.get(job_id)

    def subscribe(self) -> AsyncIterator[Event]:
        """Every event published from this call on (registered now, not at the first read)."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        return self._read(queue)

    async def _read(self, queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    async def close(self) -> None:
        self._subscribers.clear()


class RedisBus:
    """Redis pub/sub for live events and a last-state key per job for late readers."""

    def __init__(self, redis: Any, *, extra: dict[str, Any] | None = None) -> None:
        self.redis = redis  # redis.asyncio.Redis (arq's pool is one)
        self.extra = dict(extra or {})  # added to every event published here (a worker names itself)

    async def publish(self, event: Event) -> None:
        payload = json.dumps({**self.extra, **event})
        key = LAST_STATE_KEY.format(job_id=event["job_id"])
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, payload, ex=LAST_STATE_TTL_S)
            pipe.publish(CHANNEL, payload)
            await pipe.execute()

    async def last(self, job_id: str) -> Event | None:
        raw = await self.redis.get(LAST_STATE_KEY.format(job_id=job_id))
        return json.loads(raw) if raw else None

    async def subscribe(self) -> AsyncIterator[Event]:  # type: ignore[override]
        """Events as they come; survives a redis restart by subscribing again."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        yield json.loads(message["data"])
            except (ConnectionError, OSError) as exc:
                log.warning("progress subscription lost (%s); subscribing again", exc)
            except Exception as exc:
                if type(exc).__module__.startswith("redis"):
                    log.warning("progress subscription lost (%s); subscribing again", exc)
                else:
                    raise
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(0.5)  # back off before reconnecting to a restarting redis

    async def close(self) -> None:
        return None
