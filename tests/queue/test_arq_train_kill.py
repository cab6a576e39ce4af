"""kill -9 of an arq worker mid-training: the job runs again on another worker and resumes from
the last checkpoint in the blob store (not from step 0), without rendering its candidates again.

Worker A is ``persona-studio worker`` in a subprocess (tiny engine on CPU); it is killed as soon as
it reports training step 5, whose checkpoint (tiny: every 5 steps) is saved before the step is
reported. Worker B is ``engine.jobs.worker.serve`` in this process on the shared tiny engine, started
after the kill so that only A can take the job first."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from engine.jobs.worker import LEASE_S, WORKER_ID
from storage.models import JobStatus
from tests.conversation.helpers import queued
from tests.queue.conftest import kill_scene, worker_task

pytestmark = pytest.mark.slow

STEPS = 20
CHECKPOINT_EVERY = 5  # the tiny default
_STEP = re.compile(r"^training step (\d+)/(\d+)")


def _training_step(event: Any) -> int | None:
    match = _STEP.match(getattr(event, "note", None) or "")
    return int(match.group(1)) if match else None


async def test_killed_worker_training_resumes_from_its_checkpoint_on_another(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, redis_url: str
) -> None:
    t0 = time.monotonic()
    async with kill_scene(tmp_path, shared_dirs, tiny_engine, redis_url) as scene:
        settings, app, worker_a, recorder, ann = scene.settings, scene.app, scene.worker_a, scene.recorder, scene.ann
        job_id = queued(await ann.send(f"/persona train Mia images=2 steps={STEPS}"))[0]

        def a_reached_a_checkpoint(e: Any) -> bool:
            step = _training_step(e)
            return e.job_id == job_id and step is not None and step >= CHECKPOINT_EVERY

        reached = await recorder.wait_for(a_reached_a_checkpoint, 90)
        os.kill(worker_a.process.pid, signal.SIGKILL)
        worker_a.process.wait(timeout=10)
        assert reached.worker == worker_a.worker_id
        a_steps = [s for e in recorder.of(job_id) if e.worker == worker_a.worker_id and (s := _training_step(e))]
        last_a = max(a_steps)
        assert last_a < STEPS, "worker A finished training before the kill"
        assert not [e for e in recorder.of(job_id) if e.state == "done"]
        assert (await app.store.get_job(job_id)).status == JobStatus.RUNNING
        assert app.blobs.get_named(f"train/{job_id}/checkpoint") is not None
        assert app.blobs.get_named(f"train/{job_id}/dataset") is not None
        renders_before = tiny_engine.stats["renders"]

        async with worker_task(settings, tiny_engine):  # worker B
            await ann.wait_job(job_id, limit_s=LEASE_S + 90)
        print(f"killed at A's step {last_a}; delivered after {time.monotonic() - t0:.1f} s")

        job = await app.store.get_job(job_id)
        assert job.status == JobStatus.DONE and job.attempts == 2
        report = job.result["training"]
        resumed_from = report["resumed_from_step"]
        # the last checkpoint A saved: a multiple of 5, at least step 5, not past A's last step
        assert resumed_from % CHECKPOINT_EVERY == 0 and CHECKPOINT_EVERY <= resumed_from <= last_a
        b_steps = [s for e in recorder.of(job_id) if e.worker == WORKER_ID and (s := _training_step(e))]
        assert b_steps[0] == resumed_from + 1 and b_steps[-1] == STEPS  # B began at the checkpoint
        assert tiny_engine.stats["renders"] == renders_before  # B reused A's filtered candidates
        assert len(report["candidates"]) == 2 and report["steps"] == STEPS
        persona = await app.store.get_persona(job.spec["persona"]["persona_id"])
        assert persona.active_version == 1 and persona.versions[0]["job_id"] == job_id
        assert app.blobs.exists(report["lora_key"])
        assert app.blobs.get_named(f"train/{job_id}/checkpoint") is None  # cleaned up
