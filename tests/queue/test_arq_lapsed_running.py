"""Issue 20 item 2: a running job whose worker is killed while redis is down (and comes back
empty) is not left ``running``: the front end's reconciler sees that no worker holds its lease
any more and queues it again, and another worker finishes it, with nothing restarted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from commands.events import Images
from storage.models import JobStatus
from tests.conversation.helpers import queued
from tests.queue.conftest import kill_scene, worker_task
from tests.services import RedisServer

pytestmark = pytest.mark.slow


async def test_job_of_a_worker_killed_while_redis_is_down_runs_again(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, fresh_redis: RedisServer
) -> None:
    async with kill_scene(tmp_path, shared_dirs, tiny_engine, fresh_redis.url) as scene:
        app, worker_a, recorder, ann = scene.app, scene.worker_a, scene.recorder, scene.ann
        await ann.send("/settings steps=60")
        job_id = queued(await ann.send("/post Mia a red dress on the terrace"))[0]
        running = await recorder.wait_for(lambda e: e.job_id == job_id and e.state == "running" and e.step >= 1, 60)
        assert running.worker == worker_a.worker_id

        fresh_redis.stop()
        worker_a.kill()  # dies while redis is down: nobody can hand its job back
        fresh_redis.start()  # same port, empty
        back = time.monotonic()
        assert (await app.store.get_job(job_id)).status == JobStatus.RUNNING

        async with worker_task(scene.settings, tiny_engine):  # worker B
            await ann.wait_job(job_id, limit_s=60)
        took = time.monotonic() - back
        print(f"lapsed running job delivered {took:.1f} s after redis was back")

        job = await app.store.get_job(job_id)
        assert job.status == JobStatus.DONE and job.delivered
        assert len([a for a in ann.actions if isinstance(a, Images) and a.job_id == job_id]) == 1
