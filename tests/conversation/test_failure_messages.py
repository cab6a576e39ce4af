"""Issue 20 items 8 and 12 through the conversation: a photo persona whose photo has no face
fails with the user's message and an error id, without a 🔁 offer, logs no ERROR traceback, and
gives its name back (the next create of that name works)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.app import App
from bot.console import ConsoleFrontEnd
from commands.events import Reply
from tests.conversation.conftest import png_bytes
from tests.conversation.helpers import queued, run


async def test_photo_without_a_face_fails_plainly_and_frees_its_name(
    app: App, console: ConsoleFrontEnd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    photo = tmp_path / "wall.png"
    photo.write_bytes(png_bytes((96, 96), color="orange"))  # a plain wall: no face
    (job_id,) = queued(await run(console, f"/persona create-from-photo Zoe consent=yes @face={photo}"))
    replies = [a for a in console.actions if isinstance(a, Reply) and "did not work" in a.text]
    said = [a.text for a in replies]
    assert len(said) == 1, said
    assert "没有找到人脸" in replies[0].text_zh and "人设名称已释放" in replies[0].text_zh  # WeCom shows it first
    assert "no face found in the photo" in said[0] and "error id" in said[0]
    assert "🔁" not in said[0] and "name is free again" in said[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    ]
    assert (await app.store.get_job(job_id)).result["failure"]["kind"] == "no_face"

    created = await run(console, "/persona create sweet Zoe")  # the name is free again
    assert queued(created)
    user = await app.store.user("console", "ann")
    assert [(p.name, p.status) for p in await app.store.list_personas(user.id)] == [("Zoe", "ready")]
