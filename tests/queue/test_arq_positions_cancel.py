"""Queue positions and cancel on the arq queue: waiting jobs never run, running ones stop within
a step; each cancelled job is reported to its user exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bot.app import build_app
from commands.events import Images, Progress, Reply
from storage.models import JobStatus
from tests.conversation.helpers import queued
from tests.fakes.engine import FakeEngine
from tests.queue.conftest import Recorder, arq_settings, console_for, worker_task

STEP_S = 0.02


async def test_positions_and_cancel_waiting_and_running(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, redis_url: str
) -> None:
    settings = arq_settings(tmp_path, shared_dirs, redis_url)
    app = await build_app(settings, engine=tiny_engine)
    queue = app.conversation.queue
    recorder = await Recorder(queue.bus).start()
    ann = console_for(app, tmp_path)
    engine = FakeEngine(tiny_engine, gated=True, step_s=STEP_S)
    try:
        # no worker yet: three jobs wait in order
        sent = [await ann.send(f"/persona create sweet P{i}") for i in range(3)]
        ids = [queued(actions)[0] for actions in sent]
        shown = [next(a.position for a in actions if isinstance(a, Progress)) for actions in sent]
        assert shown == [0, 1, 2]
        assert [await queue.position(job_id) for job_id in ids] == [0, 1, 2]
        assert [e.position for e in recorder.events if e.state == "queued"] == [0, 1, 2]

        # cancel the middle one while it waits: it leaves the queue, the user hears once
        assert await queue.cancel(ids[1])
        await ann.wait_job(ids[1], limit_s=30)
        assert (await app.store.get_job(ids[1])).status == JobStatus.CANCELLED
        assert [await queue.position(job_id) for job_id in ids] == [0, None, 1]

        async with worker_task(settings, engine):
            # the first job runs (gated); the third waits behind it
            await recorder.wait_for(lambda e: e.job_id == ids[0] and getattr(e, "step", 0) >= 3)
            assert await queue.position(ids[0]) is None
            assert await queue.position(ids[2]) == 1  # the running job is ahead of it, as in the embedded queue

            # cancel the running job: it stops within a step or two and is recorded cancelled
            asked = time.time()
            assert await queue.cancel(ids[0])
            done = await recorder.wait_for(lambda e: e.job_id == ids[0] and e.state == "cancelled", 10)
            latency = done.ts - asked
            assert latency < 1.0, latency
            await ann.wait_job(ids[0], limit_s=30)
            after = [e for e in recorder.of(ids[0]) if e.state == "running" and e.ts > done.ts]
            assert not after  # no step after the cancel

            # the third job starts next; released, it completes
            await recorder.wait_for(lambda e: e.job_id == ids[2] and e.state == "running")
            engine.release.set()
            await ann.wait_job(ids[2], limit_s=60)

        jobs = {job_id: await app.store.get_job(job_id) for job_id in ids}
        assert jobs[ids[0]].status == JobStatus.CANCELLED and jobs[ids[0]].attempts == 1
        assert jobs[ids[1]].status == JobStatus.CANCELLED and jobs[ids[1]].attempts == 0  # never started
        assert jobs[ids[2]].status == JobStatus.DONE
        assert ids[1] not in engine.runs and not [e for e in recorder.of(ids[1]) if e.state == "running"]
        for job_id in ids[:2]:
            assert (
                len(
                    [
                        a
                        for a in ann.actions
                        if isinstance(a, Progress) and a.job_id == job_id and a.state == "cancelled"
                    ]
                )
                == 1
            )
        assert len([a for a in ann.actions if isinstance(a, Reply) and a.text == "Cancelled ❌"]) == 2
        assert await queue.cancel(ids[2]) is False  # finished: nothing to cancel
    finally:
        await recorder.stop()
        engine.release.set()
        await app.close()


async def test_worker_shutdown_hands_a_running_job_back(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, redis_url: str
) -> None:
    """Stopping a worker mid-job is not a user's cancel: the job runs again on the next worker
    at once (arq's retry, no lease to wait for) and is delivered once."""
    settings = arq_settings(tmp_path, shared_dirs, redis_url)
    app = await build_app(settings, engine=tiny_engine)
    recorder = await Recorder(app.conversation.queue.bus).start()
    ann = console_for(app, tmp_path)
    engine = FakeEngine(tiny_engine, gated=True, step_s=STEP_S)
    try:
        job_id = queued(await ann.send("/persona create sweet Mia"))[0]
        async with worker_task(settings, engine):
            await recorder.wait_for(lambda e: e.job_id == job_id and getattr(e, "step", 0) >= 1)
        job = await app.store.get_job(job_id)
        assert job.status == JobStatus.RUNNING and job.attempts == 1
        assert not [e for e in recorder.of(job_id) if e.state == "cancelled"]

        engine.release.set()
        stopped_at = time.time()
        async with worker_task(settings, engine):
            rerun = await recorder.wait_for(lambda e: e.job_id == job_id and getattr(e, "attempt", None) == 2, 30)
            assert rerun.ts - stopped_at < 5.0
            await ann.wait_job(job_id, limit_s=60)
        job = await app.store.get_job(job_id)
        assert job.status == JobStatus.DONE and job.attempts == 2 and job.delivered
        assert len([a for a in ann.actions if isinstance(a, Images) and a.job_id == job_id]) == 1
        assert (
            len([a for a in ann.actions if isinstance(a, Progress) and a.job_id == job_id and a.state == "done"]) == 1
        )
    finally:
        await recorder.stop()
        engine.release.set()
        await app.close()


async def test_a_job_past_its_timeout_fails_once(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, redis_url: str, monkeypatch: Any
) -> None:
    import engine.jobs.worker

    monkeypatch.setattr(engine.jobs.worker, "JOB_TIMEOUT_S", 0.5)
    settings = arq_settings(tmp_path, shared_dirs, redis_url)
    app = await build_app(settings, engine=tiny_engine)
    ann = console_for(app, tmp_path)
    gated = FakeEngine(tiny_engine, gated=True, step_s=STEP_S)  # never released: the job would run forever
    try:
        async with worker_task(settings, gated):
            job_id = queued(await ann.send("/persona create sweet Mia"))[0]
            await ann.wait_job(job_id, limit_s=30)
        job = await app.store.get_job(job_id)
        assert job.status == JobStatus.FAILED and "timed out" in (job.error or "") and job.attempts == 1
        failures = [a for a in ann.actions if isinstance(a, Reply) and "did not work" in a.text]
        assert len(failures) == 1 and "timed out" in failures[0].text
    finally:
        gated.release.set()
        await app.close()
