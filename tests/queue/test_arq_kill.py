"""kill -9 of an arq worker mid-job: the job runs again on another worker once its lease lapses
(about LEASE_S, not arq's job_timeout + 10 s), and the user gets exactly one result.

Worker A is ``persona-studio worker`` in a subprocess (the one that gets killed); worker B is
``engine.jobs.worker.serve`` in this process on the shared tiny engine, started once A holds the job
so that B cannot take it first."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from commands.events import Images
from engine.jobs.worker import HEARTBEAT_S, LEASE_S, WORKER_ID
from storage.models import JobStatus
from tests.conversation.helpers import queued
from tests.queue.conftest import kill_scene, worker_task

pytestmark = pytest.mark.slow


async def test_killed_worker_job_reruns_once_on_another(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, redis_url: str
) -> None:
    t0 = time.monotonic()
    async with kill_scene(tmp_path, shared_dirs, tiny_engine, redis_url) as scene:
        settings, app, worker_a, recorder, ann = scene.settings, scene.app, scene.worker_a, scene.recorder, scene.ann
        print(f"worker A ready after {time.monotonic() - t0:.1f} s")
        await ann.send("/settings steps=60")
        job_id = queued(await ann.send("/post Mia a red dress on the terrace"))[0]
        running = await recorder.wait_for(lambda e: e.job_id == job_id and e.state == "running" and e.step >= 1, 60)
        assert running.worker == worker_a.worker_id
        os.kill(worker_a.process.pid, signal.SIGKILL)
        killed_at = time.time()
        worker_a.process.wait(timeout=10)
        assert not [e for e in recorder.of(job_id) if e.state == "done"], "the job finished before the kill"
        assert (await app.store.get_job(job_id)).status == JobStatus.RUNNING

        async with worker_task(settings, tiny_engine):  # worker B
            rerun = await recorder.wait_for(
                lambda e: e.job_id == job_id and e.state == "running" and e.attempt == 2, LEASE_S + 20
            )
            delay = rerun.ts - killed_at
            print(f"re-run delay after kill -9: {delay:.2f} s (lease {LEASE_S:.0f} s)")
            assert rerun.worker == WORKER_ID  # worker B, in this process
            # not before A's last lease ran out (it ran twice at once otherwise), and soon after
            assert LEASE_S - HEARTBEAT_S - 2.0 <= delay < LEASE_S + 3.0, delay
            await ann.wait_job(job_id, limit_s=120)
        print(f"delivered after {time.monotonic() - t0:.1f} s")

        job = await app.store.get_job(job_id)
        assert job.status == JobStatus.DONE and job.attempts == 2 and job.delivered
        results = [a for a in ann.actions if isinstance(a, Images) and a.job_id == job_id]
        assert len(results) == 1
        thread = await app.store.get_thread(job.thread_id)
        turn = await app.store.get_turn(thread.current_turn_id)
        assert turn.job_id == job_id and len(turn.image_keys) == 1
        # a later sweep finds nothing more to deliver
        assert await app.conversation.deliver_pending("console") == 0
        assert len([a for a in ann.actions if isinstance(a, Images) and a.job_id == job_id]) == 1
