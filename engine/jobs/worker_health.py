"""Is a worker alive? The health keys arq workers write (one per queue) and the checks that read them:
``persona-studio worker --check`` (a container health check) and the web's ``/readyz``; and the
worker's metrics reports after its jobs (:class:`MetricsReports`)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from arq.constants import health_check_key_suffix

from engine.jobs.queue import ARQ_QUEUE_NAME
from engine.jobs.queues import ARQ_QUEUES
from engine.metrics import publish_worker_metrics
from storage.settings import Settings

HEALTH_CHECK_INTERVAL_S = 10
#: a job's end reports the worker's metrics at most this often (jobs ending closer share one report)
METRICS_EVERY_S = 2.0
HEALTH_CHECK_KEY = ARQ_QUEUE_NAME + health_check_key_suffix  # arq's default for our (images) queue
HEALTH_CHECK_KEYS = [name + health_check_key_suffix for name in ARQ_QUEUES.values()]


async def health(redis_url: str) -> str | None:
    """The health line a live worker wrote in the last ``HEALTH_CHECK_INTERVAL_S``, else None."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        lines = await client.mget(HEALTH_CHECK_KEYS)  # a worker of any queue
    finally:
        await client.aclose()
    raw = next((line for line in lines if line), None)
    return raw.decode() if raw else None


def check_health(settings: Settings) -> int:
    """Exit status for a container health check: 0 when a worker reported recently."""
    line = asyncio.run(health(settings.redis_url or "")) if settings.redis_url else None
    print(line or f"no worker has reported in the last {HEALTH_CHECK_INTERVAL_S + 1} s")
    return 0 if line else 1


class MetricsReports:
    """A worker's metrics (engine.metrics) into redis after its jobs: at once when the last report
    is :data:`METRICS_EVERY_S` old, else once when it will be. Short jobs back to back would
    otherwise render and send every metric between each job and the next (bench/worker_pair.py)."""

    def __init__(
        self, worker_id: str, every_s: float = METRICS_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.worker_id = worker_id
        self.every_s = every_s
        self.clock = clock
        self._at = -math.inf  # the clock's time of the last report
        #: the report that will follow, when a job ended within ``every_s`` of the last one
        self.later: asyncio.Task[None] | None = None

    async def report(self, redis: Any) -> None:
        wait = self._at + self.every_s - self.clock()
        if wait <= 0:
            await self._publish(redis)
        elif self.later is None or self.later.done():
            self.later = asyncio.create_task(self._publish(redis, after_s=wait), name="worker-metrics")

    async def _publish(self, redis: Any, after_s: float = 0.0) -> None:
        if after_s > 0:
            await asyncio.sleep(after_s)
        self._at = self.clock()
        await publish_worker_metrics(redis, self.worker_id)
