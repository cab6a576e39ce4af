"""Progress buses: where workers publish job events (engine.jobs.events) and front ends read them.

Every publish also stores the job's last event, so a reader that subscribes late still sees where
a job is. Two buses with one interface: :class:`LocalBus` (in-process, the embedded queue) and
:class:`RedisBus` (redis pub/sub of the events' JSON plus a last-state key per job, for arq
workers). Each carries its cache of live previews as ``previews`` (engine.previews).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from cachetools import LRUCache
from pydantic import ValidationError
from redis.backoff import ExponentialBackoff

from engine.jobs.events import AnyJobEvent, JobEvent, parse_event
from engine.previews import MemoryPreviews, PreviewStore, RedisPreviews

log = logging.getLogger(__name__)

CHANNEL = "persona-studio:events"
LAST_STATE_KEY = "persona-studio:job:{job_id}"
LAST_STATE_TTL_S = 7 * 24 * 3600
#: waits between attempts to subscribe again after redis went away (0.05 s doubling up to 2 s)
RESUBSCRIBE_BACKOFF = ExponentialBackoff(cap=2.0, base=0.05)


class ProgressBus(Protocol):
    #: the latest live preview of each running job (engine.previews), beside the events
    previews: PreviewStore

    async def publish(self, event: JobEvent) -> None: ...

    async def last(self, job_id: str) -> AnyJobEvent | None: ...

    def subscribe(self) -> AsyncIterator[AnyJobEvent]: ...

    async def close(self) -> None: ...


class LocalBus:
    """In-process fan-out: every subscriber gets every event, in order."""

    def __init__(self, keep_last: int = 10_000) -> None:
        self._subscribers: set[asyncio.Queue[Any]] = set()
        #: last event per job, the least recently published forgotten first
        self._last: LRUCache[str, Any] = LRUCache(maxsize=keep_last)
        self.previews = MemoryPreviews()

    async def publish(self, event: JobEvent) -> None:
        self._last[event.job_id] = event
        for queue in list(self._subscribers):
            queue.put_nowait(event)

    async def last(self, job_id: str) -> AnyJobEvent | None:
        return self._last.get(job_id)

    def subscribe(self) -> AsyncIterator[AnyJobEvent]:
        """Every event published from this call on (registered now, not at the first read)."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._subscribers.add(queue)
        return self._read(queue)

    async def _read(self, queue: asyncio.Queue[Any]) -> AsyncIterator[AnyJobEvent]:
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    async def close(self) -> None:
        self._subscribers.clear()


class RedisBus:
    """Redis pub/sub for live events and a last-state key per job for late readers."""

    def __init__(self, redis: Any, *, worker: str | None = None) -> None:
        self.redis = redis  # redis.asyncio.Redis (arq's pool is one)
        self.worker = worker  # names the publishing worker in every event published here
        self.previews = RedisPreviews(redis)

    async def publish(self, event: JobEvent) -> None:
        if self.worker is not None:
            event = event.model_copy(update={"worker": self.worker})
        payload = event.model_dump_json()
        key = LAST_STATE_KEY.format(job_id=event.job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, payload, ex=LAST_STATE_TTL_S)
            pipe.publish(CHANNEL, payload)
            await pipe.execute()

    async def last(self, job_id: str) -> AnyJobEvent | None:
        raw = await self.redis.get(LAST_STATE_KEY.format(job_id=job_id))
        return parse_event(raw) if raw else None

    async def subscribe(self) -> AsyncIterator[AnyJobEvent]:  # type: ignore[override]
        """Events as they come; survives a redis restart by subscribing again (with backoff)."""
        failures = 0
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                failures = 0
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        try:
                            yield parse_event(message["data"])
                        except ValidationError as exc:
                            log.warning("ignoring a malformed progress event: %s", exc)
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
            failures += 1
            await asyncio.sleep(RESUBSCRIBE_BACKOFF.compute(failures))

    async def close(self) -> None:
        return None
