"""The live workers (engine.jobs.routing.live_workers), which every worker reads each beat for its
share of the host's cores: read from the workers' own set, never by a SCAN of the whole keyspace
(it grows with every job's keys: arq results, last events, previews)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from engine.jobs import routing


async def _calls(redis: aioredis.Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_live_workers_are_read_without_walking_the_keyspace(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await routing.beat(redis, "box:1")
        await routing.beat(redis, "box:2")
        await redis.mset({f"persona-studio:job:{i}": b"{}" for i in range(3000)})  # a day's job keys
        before = await _calls(redis)
        assert await routing.live_workers(redis) == ["box:1", "box:2"]
        after = await _calls(redis)
        used = {k: n - before.get(k, 0) for k, n in after.items() if k != "info" and n != before.get(k, 0)}
        assert "scan" not in used and sum(used.values()) <= 2, used

        await routing.leave(redis, "box:1")  # stopped: gone at once
        assert await routing.live_workers(redis) == ["box:2"]
        await redis.delete(routing.ALIVE_PREFIX + "box:2")  # killed: its alive key lapsed
        assert await routing.live_workers(redis) == []
        await routing.beat(redis, "box:2")  # back
        assert await routing.live_workers(redis) == ["box:2"]

        await redis.zadd(routing.ALIVE_SET, {"gone:9": time.time() - routing.FORGET_AFTER_S - 1})
        await routing.beat(redis, "box:2")  # a beat forgets members silent for FORGET_AFTER_S
        assert [m.decode() for m in await redis.zrange(routing.ALIVE_SET, 0, -1)] == ["box:2"]
    finally:
        await redis.aclose()
