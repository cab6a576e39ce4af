"""Issue 20 item 14: the owner's chat ``/cancel`` is answered once; its job's delivery tells nothing
new. The mark on the job counts only if it really ends cancelled: a job that finished as the cancel
came still delivers its images, and an operator's cancel still tells the user "Cancelled ❌"."""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, build_app
from bot.console import ConsoleFrontEnd
from commands.events import Images, Progress, Reply
from commands.job_cancel import cancel_job
from engine.specs import JobKind, JobResult, JobSpec
from storage.blobs import BlobStore
from storage.models import JobStatus
from tests.conversation.conftest import app_settings
from tests.conversation.helpers import queued, run, texts
from tests.fakes.engine import FakeEngine
from tests.queue.conftest import Recorder


class LastStepEngine(FakeEngine):
    """Paints; a post's images wait for ``go`` without looking at the cancel flag (as a render in
    its last step, or storing its images, does), then finish."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.go = threading.Event()

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> JobResult:
        if spec.kind == JobKind.GENERATE:
            self.go.wait(60)
        return super().run(spec, on_progress, cancel)


@pytest.fixture
async def studio(tmp_path: Path) -> AsyncIterator[tuple[App, ConsoleFrontEnd, LastStepEngine]]:
    dirs = {"blobs": tmp_path / "blobs", "loras": tmp_path / "loras"}
    engine = LastStepEngine(blobs=BlobStore(dirs["blobs"]))
    app = await build_app(app_settings(tmp_path, dirs), engine=engine)
    console = ConsoleFrontEnd(app.conversation, tmp_path / "out", user="ann", stream=io.StringIO(), live=False)
    try:
        yield app, console, engine
    finally:
        engine.go.set()
        await app.close()


async def test_a_job_that_finishes_as_the_chat_cancel_comes_still_delivers_its_images(
    studio: tuple[App, ConsoleFrontEnd, LastStepEngine],
) -> None:
    app, console, engine = studio
    await run(console, "/persona create sweet Mia")
    recorder = await Recorder(app.conversation.queue.bus).start()
    try:
        (job_id,) = queued(await console.send("/post Mia a latte"))
        await recorder.wait_for(lambda e: e.job_id == job_id and e.state == "running", 30)
        assert "Cancelling 1 job" in texts(await console.send("/cancel"))  # the engine is past its last check
        running = await app.store.get_job(job_id)
        assert running.status == JobStatus.RUNNING and running.result == {"cancel_told": True}  # the mark
        engine.go.set()
        await console.wait_job(job_id, limit_s=30)
    finally:
        await recorder.stop()
    job = await app.store.get_job(job_id)
    assert job.status == JobStatus.DONE and job.delivered
    assert "cancel_told" not in job.result  # the mark went with the cancel that did not happen
    (result,) = [a for a in console.actions if isinstance(a, Images) and a.job_id == job_id]
    assert len(result.images) == engine.specs[-1].count and all(app.blobs.exists(i.blob_key) for i in result.images)
    assert not any(isinstance(a, Reply) and a.text == "Cancelled ❌" for a in console.actions)


async def test_an_operators_cancel_still_tells_the_user(studio: tuple[App, ConsoleFrontEnd, LastStepEngine]) -> None:
    app, console, engine = studio
    await run(console, "/persona create sweet Mia")
    engine.go.set()
    engine.release.clear()  # the post steps, and stops at its cancel flag
    (job_id,) = queued(await console.send("/post Mia a latte"))
    conversation = app.conversation
    reason = "cancelled by an operator"  # the web studio's admin page (bot.web.state.cancel_job)
    assert await cancel_job(app.store, conversation.queue, conversation.queue.bus, job_id, error=reason)
    await console.wait_job(job_id, limit_s=30)
    assert (await app.store.get_job(job_id)).status == JobStatus.CANCELLED
    told = [a for a in console.actions if getattr(a, "job_id", None) == job_id or isinstance(a, Reply)]
    cancelled = [a for a in told if isinstance(a, Progress) and a.state == "cancelled"]
    assert len(cancelled) == 1 and not cancelled[0].told
    assert sum(isinstance(a, Reply) and a.text == "Cancelled ❌" for a in console.actions) == 1
