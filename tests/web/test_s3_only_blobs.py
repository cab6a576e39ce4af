"""With BLOB_URL=s3://… every process reads blobs from the bucket: the web studio started alone
(`persona-studio web`) and `persona-studio persona export`, on machines whose BLOB_DIR (the local
cache) has never seen the images."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import aiohttp

from bot.app import build_app
from bot.console import ConsoleFrontEnd
from bot.persona_tools import run_export
from bot.serve import run_web
from commands.events import Reply
from storage.blobs import open_blob_store
from storage.settings import Settings
from tests.conversation.helpers import run
from tests.s3_server import S3Bucket
from tests.web.conftest import LINK, PaintingEngine, web_settings


def on_machine(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """The same installation seen from another machine: only the bucket and the database are shared."""
    return settings.model_copy(update={"blob_dir": tmp_path / name / "blob-cache"})


async def wait_up(http: aiohttp.ClientSession, base: str, server: asyncio.Task[int]) -> None:
    for _ in range(400):
        assert not server.done(), server.result()
        with contextlib.suppress(aiohttp.ClientConnectionError):
            async with http.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.025)
    raise AssertionError("the web studio did not come up")


async def test_web_studio_and_export_read_the_bucket(
    tmp_path: Path, s3_bucket: S3Bucket, http: aiohttp.ClientSession
) -> None:
    chat_settings = web_settings(tmp_path, blob_dir=tmp_path / "chat" / "blob-cache", **s3_bucket.settings())
    engine = PaintingEngine(blobs=open_blob_store(on_machine(chat_settings, tmp_path, "worker")))
    app = await build_app(chat_settings, engine=engine)
    try:
        console = ConsoleFrontEnd(app.conversation, tmp_path / "out", user="ann", live=False, stream=io.StringIO())
        await run(console, "/persona create sweet mia")
        await run(console, "/post mia latte on a balcony")
        link = await _gallery_link(console)
    finally:
        await app.close()
    listed = s3_bucket.client().list_objects_v2(Bucket=s3_bucket.bucket).get("Contents", [])
    assert len(listed) >= 2  # the portrait and the post's image

    web = on_machine(chat_settings, tmp_path, "web")
    server = asyncio.create_task(run_web(web))
    try:
        await wait_up(http, f"http://127.0.0.1:{web.web_port}", server)
        async with http.get(link) as response:
            assert response.status == 200
            html = await response.text()
        key = html.split('src="/studio/thumb/', 1)[1].split('"', 1)[0].removesuffix(".webp")
        async with http.get(f"http://127.0.0.1:{web.web_port}/studio/img/{key}") as response:
            assert response.status == 200 and response.headers["Content-Type"] == "image/png"
            assert (await response.read())[:4] == b"\x89PNG"
        async with http.get(f"http://127.0.0.1:{web.web_port}/studio/thumb/{key}.webp") as response:
            assert response.status == 200 and (await response.read())[8:12] == b"WEBP"
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server

    export = on_machine(chat_settings, tmp_path, "export")
    written = await run_export(export, "mia", "console:ann", tmp_path / "mia-export")
    portrait = tmp_path / "mia-export" / "portrait.png"
    assert portrait in written and portrait.read_bytes()[:4] == b"\x89PNG"


async def _gallery_link(console: ConsoleFrontEnd) -> str:
    actions = await console.send("/gallery")
    replies = [a for a in actions if isinstance(a, Reply)]
    found = LINK.search(replies[0].text)
    assert found, replies
    return found.group(0)
