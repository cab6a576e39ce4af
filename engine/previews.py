"""Transient previews of running jobs: each job's latest preview JPEG in a bounded cache, never in storage.

A worker's engine makes a preview at about 25/50/75 % of a render (engine.render.previews); the job
runner puts it here, then announces it with a Running event whose ``preview`` is its number. Front
ends read it with ``get``. Two caches with one interface, beside the two progress buses (each bus
carries one as ``bus.previews``): :class:`MemoryPreviews` (the latest preview of the last jobs, an
LRU; the embedded queue) and :class:`RedisPreviews` (one key per job with a TTL; arq workers).

Previews never reach the turn tree, the blob store or an export. :func:`engine.jobs.outcomes.finish_job`
drops a job's preview when the job is done or failed (the result replaces it), and a new attempt of a
job (a killed worker's job run again) drops the previous attempt's; a cancelled job keeps its last
preview until it expires.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from cachetools import LRUCache

PREVIEW_KEY = "persona-studio:preview:{job_id}"
#: how long redis keeps a job's last preview (a cancelled job's stays viewable this long)
PREVIEW_TTL_S = 3600
#: jobs whose last preview the in-memory cache keeps
MEMORY_PREVIEW_JOBS = 64


@dataclass(frozen=True)
class PreviewFrame:
    """One preview of a running job: a JPEG of its image(s) as they form (``images`` > 1: a grid)."""

    job_id: str
    seq: int  # 1, 2, 3, ... within one attempt of the job
    step: int  # job-wide step the preview was made after (the progress events' step and total)
    total: int
    jpeg: bytes
    width: int
    height: int
    images: int = 1
    ts: float = 0.0

    @property
    def percent(self) -> int:
        """How far the job was when the preview was made, in whole percent."""
        return round(100 * self.step / self.total) if self.total else 0

    def meta(self) -> dict[str, Any]:
        """Everything but the JPEG (what a web client is told about the preview)."""
        data = asdict(self)
        del data["jpeg"]
        data["percent"] = self.percent
        return data


class PreviewStore(Protocol):
    async def put(self, frame: PreviewFrame) -> None: ...

    async def get(self, job_id: str) -> PreviewFrame | None: ...

    async def drop(self, job_id: str) -> None: ...


class MemoryPreviews:
    """The latest preview of each of the last ``jobs`` jobs, in this process."""

    def __init__(self, jobs: int = MEMORY_PREVIEW_JOBS) -> None:
        self._frames: LRUCache[str, PreviewFrame] = LRUCache(maxsize=jobs)

    async def put(self, frame: PreviewFrame) -> None:
        self._frames[frame.job_id] = frame

    async def get(self, job_id: str) -> PreviewFrame | None:
        return self._frames.get(job_id)

    async def drop(self, job_id: str) -> None:
        self._frames.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._frames)


class RedisPreviews:
    """The latest preview of each job under one redis key (JPEG and metadata), expiring after ``ttl_s``."""

    def __init__(self, redis: Any, *, ttl_s: int = PREVIEW_TTL_S) -> None:
        self.redis = redis  # redis.asyncio.Redis answering bytes (arq's pool is one)
        self.ttl_s = ttl_s

    async def put(self, frame: PreviewFrame) -> None:
        key = PREVIEW_KEY.format(job_id=frame.job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={"jpeg": frame.jpeg, "meta": json.dumps(frame.meta())})
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def get(self, job_id: str) -> PreviewFrame | None:
        raw = await self.redis.hgetall(PREVIEW_KEY.format(job_id=job_id))
        if not raw:
            return None
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        if "jpeg" not in fields or "meta" not in fields:
            return None
        meta = json.loads(fields["meta"])
        meta.pop("percent", None)
        jpeg = fields["jpeg"]
        return PreviewFrame(**meta, jpeg=jpeg if isinstance(jpeg, bytes) else jpeg.encode("latin-1"))

    async def drop(self, job_id: str) -> None:
        await self.redis.delete(PREVIEW_KEY.format(job_id=job_id))
