"""Issue 20 items 10 and 14 (web): ids in URLs are bounded as in chat (26 digits -> 404, not 500);
the link's cookie is Secure behind a TLS proxy; pages carry a Content-Security-Policy and
X-Frame-Options; every page, in chromium at a phone's and a desktop's width, with a real post of
each aspect (portrait 256x320, landscape 320x192, square), shows its images at their aspect and
never wider than the screen."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from engine.specs import JobKind, JobResult, JobSpec
from tests.conversation.helpers import run
from tests.web.conftest import PaintingEngine, Studio, start_studio, stop_studio
from tests.web.test_gallery_browser import images_of

HUGE = "9" * 26


class SizedPaintingEngine(PaintingEngine):
    """Paints each post at the size its settings ask for (the plain painter paints 64x64)."""

    def _paint(self, spec: JobSpec, on_progress: Callable[[int, int], None] | None) -> JobResult:
        result = super()._paint(spec, on_progress)
        if spec.kind == JobKind.CREATE_PERSONA:
            return result
        assert self.blobs is not None
        keys = []
        for index, _ in enumerate(result.image_keys):
            buffer = io.BytesIO()
            colour = (spec.params.width % 256, spec.params.height % 256, index * 60)
            Image.new("RGB", (spec.params.width, spec.params.height), colour).save(buffer, format="PNG")
            keys.append(self.blobs.put(buffer.getvalue()))
        return result.model_copy(update={"image_keys": keys})


async def test_huge_ids_are_404_and_pages_carry_security_headers(studio: Studio, http: aiohttp.ClientSession) -> None:
    chat = studio.console("ann")
    await run(chat, "/persona create sweet mia")
    await run(chat, "/post mia latte on a balcony")
    base = studio.base
    async with http.get(await studio.link("ann"), headers={"X-Forwarded-Proto": "https"}, allow_redirects=False) as r:
        cookie = r.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    async with http.get(await studio.link("ann")) as response:  # plain http: no Secure (else no cookie)
        assert response.status == 200
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'none': no script
        assert response.headers["X-Frame-Options"] == "DENY"
    for path in (f"/studio/posts/{HUGE}", f"/studio/posts/{HUGE}/export.zip", "/studio/posts/-1", "/studio/posts/1e3"):
        async with http.get(base + path) as response:
            assert response.status == 404, path
    async with http.get(f"{base}/studio/posts?persona={HUGE}") as response:
        assert response.status == 200  # a filter naming nothing: an empty gallery


async def test_every_page_at_phone_and_desktop_widths(tmp_path: Path, browser: Any) -> None:
    from storage.blobs import BlobStore

    studio = await start_studio(tmp_path, engine=SizedPaintingEngine(blobs=BlobStore(tmp_path / "blobs")))
    try:
        chat = studio.console("boss")  # an admin: the admin page too
        await run(chat, "/persona create sweet mia")
        for size in ("256x320", "320x192", "256x256"):
            await run(chat, f"/settings size={size}")
            await run(chat, f"/post mia a post of {size}")
        thread = (await studio.app.store.list_threads((await studio.app.store.user("console", "boss")).id))[0]
        link = await studio.link("boss")
        pages = ["/studio/posts", "/studio/personas", f"/studio/posts/{thread.id}", "/studio/admin"]
        for width, height in ((390, 844), (1280, 800)):
            context = await browser.new_context(viewport={"width": width, "height": height})
            page = await context.new_page()
            await page.goto(link)
            for path in pages:
                response = await page.goto(studio.base + path)
                assert response is not None and response.status == 200, path
                assert all(w > 0 for _, w in await images_of(page)), path
                overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, (path, width, overflow)
                boxes = await page.evaluate(
                    "[...document.querySelectorAll('a.card img')].map(i => [i.clientWidth, i.clientHeight])"
                )
                # gallery cards are square crops: never a tall sliver (the height attribute ignored)
                assert all(h <= w * 1.05 for w, h in boxes), (path, width, boxes)
            await context.close()
    finally:
        await stop_studio(studio)
