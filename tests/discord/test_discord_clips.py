"""Clips on Discord: a video turn's result is its MP4 (played inline) with the result buttons; over
the upload limit the lower-bitrate copy goes instead, and with neither fitting the poster does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from commands.events import ClipOut, Images
from engine.video.mp4 import encode_mp4, fit_mp4
from tests.discord.conftest import StartBot
from tests.discord.helpers import image_out, png_bytes
from tests.discord.standin import StandInConversation
from tests.discord.test_discord_bot import ALL_BUTTONS, open_post, where_for
from tests.fakes.discord_server import FakeDiscord


def _clip(folder: Path) -> tuple[ClipOut, bytes, bytes]:
    frames = np.random.default_rng(1).integers(0, 256, size=(24, 96, 96, 3), dtype=np.uint8)
    full = encode_mp4(frames, 8)
    small = fit_mp4(frames, 8, len(full) // 2, encoded=full)
    (folder / "full.mp4").write_bytes(full)
    (folder / "small.mp4").write_bytes(small)
    clip = ClipOut(
        blob_key="1" * 64, path=str(folder / "full.mp4"), filename="post7-turn9.mp4", size=len(full),
        seconds=3.0, fps=8, frames=24, width=96, height=96,
        small_path=str(folder / "small.mp4"), small_size=len(small), caption="3 s · 8 fps",
    )  # fmt: skip
    return clip, full, small


async def _deliver_clip(fake: FakeDiscord, start_bot: StartBot, tmp_path: Path, limit: int | None) -> list:
    conversation = StandInConversation()
    clip, full, small = _clip(tmp_path)
    if limit is not None:
        fake.attachment_size_limit = limit(full, small) if callable(limit) else limit
    await start_bot(conversation)
    thread_id, _ = await open_post(fake, conversation)
    where = where_for(fake, thread_db_id=7, channel_id=fake.channel_id, thread_id=thread_id)
    poster = image_out(tmp_path, "poster.png", png_bytes())
    mark = fake.mark()
    action = Images(where=where, turn_id=9, text="Video #9", images=(poster,), buttons=ALL_BUTTONS, clip=clip)
    await conversation.deliverers["discord"]([action])
    await fake.wait_request(lambda r: bool(r.files) and r.status == 200, route="create_message", since=mark)
    return [r for r in fake.requests_for("create_message", since=mark) if r.files], full, small


async def test_a_clip_is_posted_as_its_mp4_with_the_result_buttons(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    sent, full, _ = await _deliver_clip(fake, start_bot, tmp_path, None)
    assert len(sent) == 1 and sent[0].files[0].filename == "post7-turn9.mp4"
    assert sent[0].files[0].data == full
    assert "persona:approve:9" in str(sent[0].json["components"])


async def test_over_the_limit_the_lower_bitrate_copy_goes(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    sent, full, small = await _deliver_clip(fake, start_bot, tmp_path, lambda full, small: len(small) + 100)
    posted = [r for r in sent if r.status == 200]
    assert posted[-1].files[0].data == small and len(small) < len(full)


async def test_with_neither_fitting_the_poster_goes_with_a_note(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    sent, _, _ = await _deliver_clip(fake, start_bot, tmp_path, lambda full, small: len(small) // 2)
    posted = [r for r in sent if r.status == 200]
    assert posted[-1].files[0].filename.startswith("poster")
    assert "over this server's upload limit" in posted[-1].json["content"]
