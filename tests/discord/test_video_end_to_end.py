"""/video on Discord end to end: the real discord.py client against the fake Discord, the real
conversation and the tiny engine (Kontext for the images, Wan for the clip): the clip arrives in the
post thread as a playable MP4 with the result buttons."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from engine.video.mp4 import probe_mp4
from tests.discord.conftest import StartBot
from tests.discord.test_end_to_end import (
    JOB_TIMEOUT_S,
    Studio,
    content,
    create_persona,
    open_post,
    studio,
    tiny_engine,
    turn_of,
)
from tests.fakes.discord_server import FakeDiscord

__all__ = ["studio", "tiny_engine"]  # the end-to-end module's fixtures, used here too

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian's ffmpeg) not installed")


async def test_a_clip_of_the_approved_image_arrives_as_an_mp4(
    studio: Studio, fake: FakeDiscord, start_bot: StartBot, tiny_engine: Any
) -> None:
    await start_bot(studio.app.conversation)
    await create_persona(fake, studio)
    _, first = await open_post(fake, studio, count=1)
    thread_id = int(first.vars["channel_id"])
    mark = fake.mark()
    await fake.send_interaction(fake.slash_command("approve", channel_id=thread_id))
    await fake.wait_request(lambda r: "Approved" in content(r), route="webhook_edit", since=mark)

    mark = fake.mark()
    await fake.send_interaction(
        fake.slash_command("video", {"seconds": 4, "motion": "she lifts the cup"}, channel_id=thread_id)
    )
    result = await fake.wait_request(
        lambda r: r.status == 200 and bool(r.files) and r.files[0].filename.endswith(".mp4"),
        route="create_message",
        since=mark,
        timeout_s=JOB_TIMEOUT_S,
    )
    assert result.vars["channel_id"] == str(thread_id) and content(result).startswith("Video #")
    clip_turn = await studio.store.get_turn(turn_of(result))  # the result buttons act on the clip's turn
    assert clip_turn.kind == "video" and clip_turn.parent_id == turn_of(first)
    info = probe_mp4(result.files[0].data)
    assert (info.codec, info.pix_fmt, info.frames) == ("h264", "yuv420p", 32)
    assert info.duration == pytest.approx(4.0, abs=1e-3)
    assert result.files[0].data == studio.app.blobs.get(clip_turn.params["video"]["key"])
