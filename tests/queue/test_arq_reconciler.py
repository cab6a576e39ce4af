"""redis restarted (empty) while one job runs and one waits: the running one finishes, and the
waiting one, which only storage still knows, runs within 15 s of redis being back, with nothing
restarted (the ArqQueue client's reconciler queues it again)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_app
from bot.console import ConsoleFrontEnd
from storage.blobs import BlobStore
from storage.models import JobStatus
from tests.conversation.helpers import queued
from tests.fakes.engine import FakeEngine
from tests.queue.conftest import Recorder, arq_settings, wait_health, worker_task
from tests.services import RedisServer

pytestmark = pytest.mark.slow


async def test_a_waiting_job_lost_by_a_redis_restart_runs_without_a_restart(
    tmp_path: Path, shared_dirs: dict[str, Path], fresh_redis: RedisServer
) -> None:
    engine = FakeEngine(blobs=BlobStore(shared_dirs["blobs"]), gated=True)  # the first job holds the worker
    settings = arq_settings(tmp_path, shared_dirs, fresh_redis.url)
    app = await build_app(settings, engine=engine)
    ann = ConsoleFrontEnd(app.conversation, tmp_path / "ann", user="ann", stream=io.StringIO(), live=False)
    recorder = await Recorder(app.conversation.queue.bus).start()
    try:
        async with worker_task(settings, engine) as worker:
            await wait_health(fresh_redis.url)
            (running,) = queued(await ann.send("/persona create sweet Mia"))
            await recorder.wait_for(lambda e: e.job_id == running and e.state == "running", 30)
            (waiting,) = queued(await ann.send("/persona create sweet Zoe"))
            assert await app.conversation.queue.position(waiting) is not None  # in redis, behind Mia

            fresh_redis.stop()
            fresh_redis.start()  # same port, empty: the waiting job is gone from redis
            back = time.monotonic()
            engine.release.set()
            await ann.wait_job(running, limit_s=60)
            await ann.wait_job(waiting, limit_s=15)
            took = time.monotonic() - back
            assert not worker.done()
        job = await app.store.get_job(waiting)
        assert job.status == JobStatus.DONE and job.attempts == 1
        assert (await app.store.get_job(running)).status == JobStatus.DONE
        print(f"waiting job done {took:.1f} s after redis was back")
    finally:
        await recorder.stop()
        await app.close()


async def test_reconcile_queues_only_what_redis_lost(
    tmp_path: Path, shared_dirs: dict[str, Path], redis_url: str, tiny_engine: Any
) -> None:
    """No worker: the job waits in redis; reconcile finds nothing to do until redis loses it."""
    import redis.asyncio as aioredis

    settings = arq_settings(tmp_path, shared_dirs, redis_url)
    app = await build_app(settings, engine=tiny_engine)
    try:
        ann = ConsoleFrontEnd(app.conversation, tmp_path / "ann", user="ann", stream=io.StringIO(), live=False)
        (job_id,) = queued(await ann.send("/persona create sweet Mia"))
        queue: Any = app.conversation.queue
        assert await queue.reconcile() == 0
        client = aioredis.from_url(redis_url)
        await client.flushdb()
        await client.aclose()
        assert await queue.position(job_id) is None
        assert await queue.reconcile() == 1
        assert await queue.position(job_id) == 0
        assert await queue.reconcile() == 0
    finally:
        await app.close()
