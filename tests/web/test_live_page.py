"""The live page of a running turn (/studio/jobs/<id>): reachable from the post page and the admin
view, updated by server-sent events (or the short-poll fallback) in chromium as the job steps and
its previews arrive; owner (or admin) only; a cancelled job keeps its last preview."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from storage.blobs import BlobStore
from tests.conversation.helpers import queued, run
from tests.fakes.previews import PREVIEWS, STEPS, PreviewingEngine
from tests.web.conftest import PaintingEngine, Studio, start_studio, stop_studio

WAIT_MS = 20_000  # failure guard only: every wait ends on what the page shows


class SlowPaintingEngine(PreviewingEngine, PaintingEngine):
    """A generate job takes one step per ``steps.release()`` and shows a red, then a blue preview
    after steps 2 and 4; results are painted per user and post."""


@pytest.fixture
async def live_studio(tmp_path: Path) -> AsyncIterator[Studio]:
    studio = await start_studio(tmp_path, engine=SlowPaintingEngine(blobs=BlobStore(tmp_path / "blobs")))
    yield studio
    studio.engine.steps.release(100)  # nothing left waiting
    await stop_studio(studio)


async def _running_post(studio: Studio, user: str = "ann") -> tuple[Any, str]:
    """A persona (made at once) and a post whose job now waits for its steps; (chat, job id)."""
    chat = studio.console(user)
    await run(chat, "/persona create sweet mia")
    job_id = queued(await chat.send("/post mia latte on a balcony"))[0]
    return chat, job_id


PREVIEW_COLOUR = """
() => { const img = document.getElementById('preview');
  if (!img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  return [img.dataset.preview, ...g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3)]; }
"""


async def _preview_shown(page: Any, seq: int) -> list[int]:
    """Wait until preview ``seq`` has loaded; its centre pixel."""
    handle = await page.wait_for_function(
        f"(() => {{ const v = ({PREVIEW_COLOUR})(); return v && v[0] === '{seq}' ? v.slice(1) : null; }})()",
        timeout=WAIT_MS,
    )
    return await handle.json_value()


def _close(colour: list[int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 24 for a, b in zip(colour, expected, strict=True))


async def test_live_page_follows_a_running_turn_in_chromium(live_studio: Studio, browser: Any) -> None:
    studio = live_studio
    _, job_id = await _running_post(studio)
    link = await studio.link("ann")
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    await page.goto(link)
    job = await studio.app.store.get_job(job_id)
    await page.goto(f"{studio.base}/studio/posts/{job.thread_id}")
    await page.click(f"a.live[href='/studio/jobs/{job_id}']")  # the post page links to the live page
    assert page.url == f"{studio.base}/studio/jobs/{job_id}"
    assert await page.get_attribute("#live", "data-mode") == "events"
    # a phone, on the short-poll fallback, beside it
    phone_context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, bypass_csp=True)
    await phone_context.add_cookies(await context.cookies())
    phone = await phone_context.new_page()
    await phone.goto(f"{studio.base}/studio/jobs/{job_id}?poll=1")
    assert await phone.get_attribute("#live", "data-mode") == "poll"

    studio.engine.steps.release(2)
    for view in (page, phone):
        assert _close(await _preview_shown(view, 1), PREVIEWS[2])
        await view.wait_for_function("document.getElementById('bar').value === 0.25", timeout=WAIT_MS)
        assert "Rendering 25 %" in await view.inner_text("#status")
    assert await phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    studio.engine.steps.release(2)
    assert _close(await _preview_shown(page, 2), PREVIEWS[4])  # the same <img>, a new preview
    await page.wait_for_function("document.getElementById('bar').value === 0.5", timeout=WAIT_MS)
    assert (await page.inner_text("#eta")).startswith("ETA")

    studio.engine.steps.release(STEPS - 4)
    for view in (page, phone):
        await view.wait_for_function("document.getElementById('live').dataset.state === 'done'", timeout=WAIT_MS)
        assert await view.is_hidden("#frame")  # the result replaces the preview
        assert "the result is in the post" in await view.inner_text("#after")
    await phone_context.close()
    await context.close()


async def test_cancelled_turn_keeps_its_last_preview_marked_cancelled(live_studio: Studio, browser: Any) -> None:
    studio = live_studio
    chat, job_id = await _running_post(studio)
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    await page.goto(await studio.link("ann"))
    await page.goto(f"{studio.base}/studio/jobs/{job_id}")
    studio.engine.steps.release(3)
    assert _close(await _preview_shown(page, 1), PREVIEWS[2])
    await run(chat, "/cancel")
    await page.wait_for_function("document.getElementById('live').dataset.state === 'cancelled'", timeout=WAIT_MS)
    assert await page.is_visible("#preview") and await page.is_visible("#stamp")
    assert await page.inner_text("#stamp") == "cancelled"
    await page.reload()  # a late visitor sees the same
    assert _close(await _preview_shown(page, 1), PREVIEWS[2])
    assert await page.is_visible("#stamp")
    await context.close()


async def test_only_the_owner_or_an_admin_sees_a_job(live_studio: Studio, http: aiohttp.ClientSession) -> None:
    studio = live_studio
    _, job_id = await _running_post(studio)
    urls = [f"{studio.base}/studio/jobs/{job_id}{tail}" for tail in ("", "/state.json", "/preview.jpg", "/events")]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as bob:
        await bob.get(await studio.link("bob"))
        for url in urls:
            async with bob.get(url) as response:
                assert response.status == 404, url
    await http.get(await studio.link("ann"))
    async with http.get(urls[2]) as response:
        assert response.status == 404  # no preview yet
    async with http.get(urls[1]) as response:
        state = await response.json()
        assert response.headers["Cache-Control"] == "no-store"
        assert state["job"] == job_id and state["state"] in ("queued", "running") and state["preview"] is None
    studio.engine.steps.release(2)
    async with http.get(urls[3]) as response:  # the stream: snapshots until the first preview
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for line in response.content:
            if line.startswith(b"data:") and b'"preview": 1' in line:
                break
    async with http.get(urls[2]) as response:
        assert response.status == 200 and response.content_type == "image/jpeg"
        assert response.headers["Cache-Control"] == "no-store"
        assert Image.open(io.BytesIO(await response.read())).size == (64, 48)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as boss:
        await boss.get(await studio.link("boss"))  # ADMIN_IDS: console:boss
        async with boss.get(f"{studio.base}/studio/admin") as response:
            assert f'href="/studio/jobs/{job_id}"' in await response.text()
        async with boss.get(urls[1]) as response:
            assert response.status == 200 and (await response.json())["preview"] == 1


async def test_a_link_with_next_lands_on_the_live_page_and_never_elsewhere(
    live_studio: Studio, http: aiohttp.ClientSession
) -> None:
    from commands.web_links import job_page, studio_link
    from storage.settings import web_secret

    studio = live_studio
    _, job_id = await _running_post(studio)
    ann = await studio.app.store.user("console", "ann")
    secret = web_secret(studio.settings)
    link = studio_link(secret, studio.base, ann.id, job_page(job_id))
    async with http.get(link) as response:
        assert response.status == 200 and str(response.url) == f"{studio.base}/studio/jobs/{job_id}"
    token = link.split("/s/")[1].split("?")[0]
    for bad in ("https://evil.example/x", "//evil.example/studio/", "/studio/../s/x", "/elsewhere"):
        async with http.get(f"{studio.base}/s/{token}", params={"next": bad}) as response:
            assert str(response.url) == f"{studio.base}/studio/posts", bad
