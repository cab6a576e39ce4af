"""Is a worker alive? The health keys arq workers write (one per queue) and the checks that read them:
``persona-studio worker --check`` (a container health check) and the web's ``/readyz``."""

from __future__ import annotations

import asyncio

from arq.constants import health_check_key_suffix

from engine.jobs.queue import ARQ_QUEUE_NAME
from engine.jobs.queues import ARQ_QUEUES
from storage.settings import Settings

HEALTH_CHECK_INTERVAL_S = 10
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
