"""A worker's metrics reach redis after its jobs, but jobs that end close together share one report
(engine.jobs.worker_health.MetricsReports): rendering and sending every metric between each short
job and the next held the worker's next job back (bench/worker_pair.py)."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from engine.jobs.worker_health import MetricsReports
from engine.metrics import WORKER_METRICS_KEY


async def _reports(redis: aioredis.Redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_hset", {}).get("calls", 0))


async def test_jobs_ending_close_together_share_one_report(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    now = [100.0]
    reports = MetricsReports("box:1", every_s=0.3, clock=lambda: now[0])
    try:
        base = await _reports(redis)  # HSETs of the server so far (other tests' too)
        await reports.report(redis)  # the first job's end: reported at once
        first = json.loads(await redis.hget(WORKER_METRICS_KEY, "box:1"))
        assert await _reports(redis) == base + 1 and reports.later is None

        now[0] = 100.1  # two more jobs end 0.1 s later: one report for both, when the 0.3 s are up
        await reports.report(redis)
        pending = reports.later
        await reports.report(redis)
        assert pending is not None and reports.later is pending
        assert await _reports(redis) == base + 1

        await asyncio.wait_for(pending, 10)
        assert await _reports(redis) == base + 2
        assert json.loads(await redis.hget(WORKER_METRICS_KEY, "box:1"))["at"] > first["at"]

        now[0] = 101.0  # a job ending after the interval: at once again
        await reports.report(redis)
        assert await _reports(redis) == base + 3 and reports.later is pending
    finally:
        await redis.aclose()
