"""Issue 20 item 13: an edit sent while the post's first images render is not refused: it waits
for them (held, and says so) and then starts from them; a second one meanwhile is refused, and
if the first images fail the waiting edit fails with them."""

from __future__ import annotations

import io
from pathlib import Path

from bot.app import build_app
from bot.console import ConsoleFrontEnd
from engine.specs import JobKind
from storage.blobs import BlobStore
from storage.models import JobStatus, TurnStatus
from tests.conversation.conftest import app_settings
from tests.conversation.helpers import errors, queued, run, texts
from tests.fakes.engine import FakeEngine


async def test_an_edit_during_the_first_render_waits_for_it(tmp_path: Path, shared_dirs: dict[str, Path]) -> None:
    engine = FakeEngine(blobs=BlobStore(shared_dirs["blobs"]), gated=True)
    app = await build_app(app_settings(tmp_path, shared_dirs), engine=engine)
    ann = ConsoleFrontEnd(app.conversation, tmp_path / "out", user="ann", stream=io.StringIO(), live=False)
    try:
        engine.release.set()
        await run(ann, "/persona create sweet Mia")
        engine.release.clear()
        (post_job,) = queued(await ann.send("/post Mia count=2 a latte on a balcony"))

        sent = await ann.send("hold the latte higher")
        assert not errors(sent), errors(sent)
        assert "starts as soon as they are done" in texts(sent)
        (edit_job,) = queued(sent)
        assert (await app.store.get_job(edit_job)).status == JobStatus.HELD
        assert "already waits" in errors(await ann.send("and smile"))[0]

        engine.release.set()
        await ann.wait_job(post_job, limit_s=60)
        await ann.wait_job(edit_job, limit_s=60)
        edit = await app.store.get_job(edit_job)
        first = await app.store.turn_for_job(post_job)
        turn = await app.store.turn_for_job(edit_job)
        assert edit.status == JobStatus.DONE and edit.kind == JobKind.EDIT
        assert edit.spec["context_keys"] == first.image_keys and len(first.image_keys) == 2
        assert turn.parent_id == first.id and turn.status == TurnStatus.DONE
        assert (await app.store.get_thread(turn.thread_id)).current_turn_id == turn.id
    finally:
        engine.release.set()
        await app.close()


async def test_a_waiting_edit_fails_with_the_first_images(tmp_path: Path, shared_dirs: dict[str, Path]) -> None:
    engine = FakeEngine(blobs=BlobStore(shared_dirs["blobs"]), gated=True)
    app = await build_app(app_settings(tmp_path, shared_dirs), engine=engine)
    ann = ConsoleFrontEnd(app.conversation, tmp_path / "out", user="ann", stream=io.StringIO(), live=False)
    try:
        engine.release.set()
        await run(ann, "/persona create sweet Mia")
        engine.release.clear()
        (post_job,) = queued(await ann.send("/post Mia a latte on a balcony"))
        (edit_job,) = queued(await ann.send("hold the latte higher"))
        await ann.send("/cancel")  # cancels the first images
        await ann.wait_job(post_job, limit_s=60)
        await ann.wait_job(edit_job, limit_s=60)
        assert (await app.store.get_job(edit_job)).status in (JobStatus.FAILED, JobStatus.CANCELLED)
    finally:
        engine.release.set()
        await app.close()
