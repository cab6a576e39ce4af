"""Separate queues on arq: a clip runs on a video worker while an image worker finishes a post;
/cancel stops the clip; a released clip is a playable MP4 made by the real tiny Wan pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_app
from engine.jobs.queues import ARQ_QUEUES, IMAGES, VIDEO, arq_queue_of
from engine.video.mp4 import probe_mp4
from storage.models import JobStatus
from tests.conversation.helpers import queued, run, texts
from tests.fakes.engine import FakeEngine
from tests.queue.conftest import Recorder, arq_settings, console_for, worker_task

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian's ffmpeg) not installed")


def test_each_kind_has_its_queue() -> None:
    assert arq_queue_of("video") == ARQ_QUEUES[VIDEO] != ARQ_QUEUES[IMAGES] == arq_queue_of("edit")
    assert arq_queue_of("train_persona") not in (ARQ_QUEUES[VIDEO], ARQ_QUEUES[IMAGES])
    assert ARQ_QUEUES[IMAGES] == "arq:queue"  # arq's default: queues from before the split go on


async def test_an_image_turn_finishes_while_a_clip_runs_on_the_video_worker(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, redis_url: str
) -> None:
    settings = arq_settings(tmp_path, shared_dirs, redis_url)
    app = await build_app(settings, engine=tiny_engine)
    recorder = await Recorder(app.conversation.queue.bus).start()
    ann = console_for(app, tmp_path)
    clips = FakeEngine(tiny_engine, gated=True)  # a clip that takes as long as the test wants
    try:
        async with (
            worker_task(settings, tiny_engine, queues=(IMAGES,), worker_id="images-worker"),
            worker_task(settings, clips, queues=(VIDEO,), worker_id="video-worker"),
        ):
            await run(ann, "/persona create sweet Mia")
            await run(ann, "/post Mia sipping a latte")
            await run(ann, "/approve")
            first_post = (await app.store.user("console", "ann")).current_thread_id

            [clip_id] = queued(await ann.send("/video motion=she smiles"))
            await recorder.wait_for(lambda e: e.job_id == clip_id and getattr(e, "step", 0) >= 2)

            # a new post while the clip runs: the image worker finishes it, the clip still runs
            [post_id] = queued(await ann.send("/post Mia on the terrace"))
            await ann.wait_job(post_id, limit_s=60)
            assert (await app.store.get_job(post_id)).status == JobStatus.DONE
            assert (await app.store.get_job(clip_id)).status == JobStatus.RUNNING
            ran = {e.worker for e in recorder.of(post_id) if e.state == "running"}
            assert ran == {"images-worker"}
            assert {e.worker for e in recorder.of(clip_id) if e.state == "running"} == {"video-worker"}

            # /cancel in the clip's post stops it
            await ann.send(f"/thread {first_post}")
            assert "Cancelling 1 job" in texts(await ann.send("/cancel"))
            await ann.wait_job(clip_id, limit_s=30)
            assert (await app.store.get_job(clip_id)).status == JobStatus.CANCELLED

            # again, released: the real tiny Wan pipeline makes the clip on the video worker
            [again_id] = queued(await ann.send("/video seconds=3"))
            clips.release.set()
            await ann.wait_job(again_id, limit_s=120)
            job = await app.store.get_job(again_id)
            assert job.status == JobStatus.DONE
            turn = await app.store.turn_for_job(again_id)
            info = probe_mp4(app.blobs.path(turn.params["video"]["key"]))
            assert (info.codec, info.pix_fmt, info.frames) == ("h264", "yuv420p", 24)
            assert info.duration == pytest.approx(3.0, abs=1e-3)
    finally:
        clips.release.set()
        await recorder.stop()
        await app.close()
