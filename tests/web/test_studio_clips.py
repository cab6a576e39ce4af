"""The web studio plays a post's clip inline: a <video> with its poster on the post page, the MP4
served as video/mp4 with Range requests, to its workspace only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.conversation.conftest import shared_dirs, tiny_engine
from tests.conversation.helpers import run
from tests.fakes.engine import FakeEngine
from tests.web.conftest import start_studio, stop_studio

__all__ = ["shared_dirs", "tiny_engine"]  # the conversation tests' session fixtures, used here too


async def test_the_post_page_plays_the_clip_inline(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, http: aiohttp.ClientSession
) -> None:
    studio = await start_studio(
        tmp_path, FakeEngine(tiny_engine), blob_dir=shared_dirs["blobs"], lora_dir=shared_dirs["loras"]
    )
    try:
        chat = studio.console("ann")
        await run(chat, "/persona create sweet Mia")
        await run(chat, "/post Mia a latte on a balcony")
        await run(chat, "/approve")
        await run(chat, "/video motion=she smiles")
        user = await studio.app.store.user("console", "ann")
        turn = await studio.app.store.get_turn(
            (await studio.app.store.get_thread(user.current_thread_id)).current_turn_id
        )
        clip = turn.params["video"]

        async with http.get(await studio.link("ann")) as response:
            assert response.status == 200
        async with http.get(f"{studio.base}/studio/posts/{turn.thread_id}") as response:
            html = await response.text()
        assert f'src="/studio/video/{clip["key"]}.mp4"' in html and "<video controls" in html
        assert f'poster="/studio/img/{clip["poster_key"]}"' in html

        url = f"{studio.base}/studio/video/{clip['key']}.mp4"
        async with http.get(url) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "video/mp4"
            assert await response.read() == studio.app.blobs.get(clip["key"])
        async with http.get(url, headers={"Range": "bytes=0-99"}) as response:
            assert response.status == 206 and len(await response.read()) == 100
        async with http.get(f"{studio.base}/studio/img/{clip['poster_key']}") as response:
            assert response.status == 200 and response.headers["Content-Type"] == "image/png"

        async with http.get(f"{studio.base}/studio/video/{'0' * 64}.mp4") as response:
            assert response.status == 404  # a key that is not the workspace's
    finally:
        await stop_studio(studio)
