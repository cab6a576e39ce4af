"""Fixtures for the web studio: an app on the fake painting engine, its web server on a free
port, console users who shape posts in chat, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bot.app import App, build_app
from bot.console import ConsoleFrontEnd
from bot.web import WebConfig, WebFrontEnd, make_state
from commands.events import Event, EventKind, Reply
from engine.specs import JobKind, JobResult, JobSpec
from storage.blobs import BlobStore
from storage.settings import Settings, load_settings
from tests.conversation.helpers import run
from tests.fakes.engine import FakeEngine
from tests.services import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
LINK = re.compile(r"https?://\S+/s/\S+")


class PaintingEngine(FakeEngine):
    """The fake engine, painting each user's, post's and image's picture in its own colour (the
    plain fake paints the same PNG for everyone, and the blob store is content-addressed)."""

    def _paint(self, spec: JobSpec, on_progress: Callable[[int, int], None] | None) -> JobResult:
        assert self.blobs is not None
        count = 1 if spec.kind == JobKind.CREATE_PERSONA else max(1, spec.count)
        keys = []
        for index in range(count):
            colour = ((spec.user_id * 70) % 256, (spec.seed + index * 40) % 256, ((spec.thread_id or 0) * 50) % 256)
            buffer = io.BytesIO()
            Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
            keys.append(self.blobs.put(buffer.getvalue()))
        if on_progress is not None:
            on_progress(1, 1)
        if spec.kind == JobKind.CREATE_PERSONA:
            return JobResult(reference_key=keys[0], embedding=[0.0] * 8, lora_mix=spec.persona.lora_mix)
        notes, scores = ["ok"] * count, [0.9] * count
        return JobResult(image_keys=keys, seeds=[spec.seed] * count, identity_scores=scores, identity_notes=notes)


def web_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        "blob_dir": tmp_path / "blobs",
        "lora_dir": tmp_path / "loras",
        "engine_model": "tiny",
        "redis_url": None,
        "web_host": "127.0.0.1",
        "web_port": free_port(),
        "admin_ids": "console:boss",
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class Studio:
    settings: Settings
    app: App
    web: WebFrontEnd
    engine: FakeEngine
    tmp_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def console(self, user: str, workspace: str = "") -> ConsoleFrontEnd:
        """A console of ``user`` in ``workspace`` ("" = the console's shared ``local``)."""
        out = self.tmp_path / f"out-{user}"
        return ConsoleFrontEnd(
            self.app.conversation, out, user=user, stream=io.StringIO(), live=False, workspace=workspace
        )

    async def link(self, user: str, workspace: str = "") -> str:
        """/gallery in chat, as that user (in that workspace): the link from its (private) reply."""
        event = Event(
            platform="console",
            user_id=user,
            user_name=user,
            kind=EventKind.COMMAND,
            command="gallery",
            workspace=workspace,
        )
        actions = await self.app.conversation.handle(event)  # (a new console would take over delivery)
        replies = [a for a in actions if isinstance(a, Reply)]
        assert len(replies) == 1 and replies[0].private, replies
        found = LINK.search(replies[0].text)
        assert found, replies[0].text
        return found.group(0)


async def start_studio(tmp_path: Path, engine: FakeEngine | None = None, **overrides: Any) -> Studio:
    settings = web_settings(tmp_path, **overrides)
    engine = engine or PaintingEngine(blobs=BlobStore(settings.blob_dir))
    app = await build_app(settings, engine=engine)
    config = WebConfig.from_settings(settings)
    web = WebFrontEnd(config, make_state(config, app.store, app.blobs, app.conversation.queue))
    await web.start()
    return Studio(settings=settings, app=app, web=web, engine=engine, tmp_path=tmp_path)


async def stop_studio(studio: Studio) -> None:
    await studio.web.stop()
    await studio.app.close()


@pytest.fixture
async def studio(tmp_path: Path) -> AsyncIterator[Studio]:
    studio = await start_studio(tmp_path)
    yield studio
    await stop_studio(studio)


async def make_posts(studio: Studio, user: str, persona: str, prompts: list[str], workspace: str = "") -> None:
    """A persona and one post per prompt, shaped in chat as a user would (in ``workspace``)."""
    chat = studio.console(user, workspace)
    await run(chat, f"/persona create sweet {persona}")
    for prompt in prompts:
        await run(chat, f"/post {persona} {prompt}")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies like a browser (the studio link sets one)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's chromium through Playwright (no browser download: executable_path)."""
    if not HAVE_CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()
