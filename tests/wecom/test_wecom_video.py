"""视频 on WeCom through the REAL commands layer and the tiny engine (Kontext for the images, Wan for
the clip): the clip goes out as a video message (media/upload type=video) with its result card."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from commands.conversation import Conversation, ConversationConfig
from engine.jobs.queue import make_queue
from engine.jobs.runner import JobRunner
from engine.video.mp4 import probe_mp4
from storage.blobs import BlobStore
from storage.db import Database
from storage.repository import Store
from tests.conversation.conftest import shared_dirs, tiny_engine
from tests.fakes.engine import FakeEngine
from tests.fakes.wecom_api import FakeWeComAPI
from tests.wecom.harness import AGENT_ID, CORP_ID, SECRET, WeComHarness, wecom_settings
from tests.wecom.test_wecom_conversation import ALICE, result_cards, texts, wait_for

__all__ = ["shared_dirs", "tiny_engine"]  # the conversation tests' session fixtures, used here too

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian's ffmpeg) not installed")


async def test_视频_sends_the_clip_as_a_video_message(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any
) -> None:
    async with FakeWeComAPI(CORP_ID, SECRET, AGENT_ID) as fake:
        settings = wecom_settings(
            fake.base_url, database_url=f"sqlite+aiosqlite:///{tmp_path / 'ps.db'}", blob_dir=str(shared_dirs["blobs"])
        )
        db = Database(settings.database_url)
        await db.upgrade()
        store = Store(db)
        blobs = BlobStore(settings.blob_dir)  # the folder the session's tiny engine writes to
        queue = make_queue(None, store, lambda bus: JobRunner(FakeEngine(tiny_engine), store, bus))
        config = ConversationConfig(lora_dir=shared_dirs["loras"])
        conversation = Conversation(store, blobs, queue, config)
        await conversation.start()
        try:
            async with WeComHarness(conversation, fake=fake) as h:
                await h.say(ALICE, "人设 创建 sweet mia")
                await wait_for(fake, lambda f: any(" is ready" in t for t in texts(f)))
                await h.say(ALICE, "发帖 mia 在露台上拿着拿铁")
                await wait_for(fake, lambda f: len(result_cards(f)) == 1)
                await h.say(ALICE, "通过")
                await wait_for(fake, lambda f: any("Approved" in t for t in texts(f)))

                await h.say(ALICE, "视频 seconds=3 motion=她微笑着举起杯子")
                await fake.wait_for(lambda f: bool(f.messages_to(ALICE, "video")), within_s=60)
                await wait_for(fake, lambda f: len(result_cards(f)) == 2)  # the clip's card: 通过 / 重来 / 撤销
                video = fake.messages_to(ALICE, "video")[0]["video"]
                upload = fake.uploads[video["media_id"]]
                assert upload.media_type == "video" and upload.filename.endswith(".mp4")
                info = probe_mp4(upload.data)
                assert (info.codec, info.pix_fmt, info.frames) == ("h264", "yuv420p", 24)
                assert "3 s · 8 fps" in video["description"]
                turn_id = int(result_cards(fake)[-1]["button_list"][0]["key"].split(":")[1])
                turn = await store.get_turn(turn_id)
                assert turn.kind == "video" and turn.instruction == "她微笑着举起杯子"
                assert upload.data == blobs.get(turn.params["video"]["key"])
        finally:
            await conversation.close()
            await db.dispose()
