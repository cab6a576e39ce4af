"""Clips on WeCom: a video turn's result goes out as a video message (media/upload type=video, an
MP4 of at most 10 MB: the lower-bitrate copy when the clip is larger) beside the result card."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np

from bot.wecom.api import VIDEO_LIMIT_BYTES, WeComAPI
from bot.wecom.render import ActionRenderer
from commands.events import Button, ClipOut, ImageOut, Images, Where
from engine.video.mp4 import encode_mp4
from tests.fakes.wecom_api import FakeWeComAPI
from tests.wecom.harness import AGENT_ID, CORP_ID, SECRET

BUTTONS = (Button.APPROVE, Button.REGEN, Button.UNDO, Button.CANCEL)


def _result(folder: Path, *, full_size: int | None = None) -> tuple[Images, bytes]:
    mp4 = encode_mp4(np.random.default_rng(2).integers(0, 256, size=(24, 64, 64, 3), dtype=np.uint8), 8)
    (folder / "clip.mp4").write_bytes(mp4)
    poster = folder / "poster.png"
    poster.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    if full_size is None:
        path, size, small, small_size = folder / "clip.mp4", len(mp4), None, None
    else:  # a clip over WeCom's limit, with its upload-sized copy
        path, size = folder / "big.mp4", full_size
        path.write_bytes(b"\0\0\0\x18ftypisom" + b"\0" * (full_size - 12))
        small, small_size = str(folder / "clip.mp4"), len(mp4)
    clip = ClipOut(
        blob_key="1" * 64, path=str(path), filename="post3-turn8.mp4", size=size, seconds=3.0, fps=8,
        frames=24, width=64, height=64, poster_path=str(poster), small_path=small, small_size=small_size,
        caption="3 s · 8 fps",
    )  # fmt: skip
    image = ImageOut(blob_key="2" * 64, path=str(poster), filename="poster.png")
    where = Where(platform="wecom", user_id="alice", thread_db_id=3)
    return Images(where=where, turn_id=8, text="Video #8", images=(image,), buttons=BUTTONS, clip=clip), mp4


async def _send(fake: FakeWeComAPI, http: aiohttp.ClientSession, action: Images) -> None:
    api = WeComAPI(corp_id=CORP_ID, secret=SECRET, agent_id=AGENT_ID, session=http, base_url=fake.base_url)
    await ActionRenderer(lambda: api).render([action], raise_errors=True)


async def test_a_clip_goes_out_as_a_video_message_with_the_result_card(
    fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    action, mp4 = _result(tmp_path)
    await _send(fake_wecom, http, action)
    assert next(iter(fake_wecom.uploads.values())).data == mp4
    kinds = [m["msgtype"] for m in fake_wecom.messages_to("alice")]
    assert "video" in kinds and "image" not in kinds and kinds[-1] == "template_card"
    video = next(m for m in fake_wecom.messages_to("alice", "video"))["video"]
    upload = fake_wecom.uploads[video["media_id"]]
    assert upload.media_type == "video" and upload.filename == "post3-turn8.mp4"


async def test_a_clip_over_10_mb_sends_its_lower_bitrate_copy(
    fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    action, mp4 = _result(tmp_path, full_size=VIDEO_LIMIT_BYTES + 1024)
    await _send(fake_wecom, http, action)
    video = next(m for m in fake_wecom.messages_to("alice", "video"))["video"]
    assert fake_wecom.uploads[video["media_id"]].data == mp4
