"""The studio in a real browser (Playwright driving Debian's chromium): a chat-issued link opens
the gallery of the user's workspace, every image loads, the turn tree shows instructions, scores
and the activity log, the export downloads; a link from another workspace shows none of it;
forged and expired links get 403."""

from __future__ import annotations

import io
import time
import zipfile
from typing import Any

from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from commands.web_links import LINK_PATH, SALT
from storage.settings import web_secret
from tests.conversation.helpers import run
from tests.web.conftest import Studio, make_posts

ALL_IMAGES_LOADED = """
() => Promise.all([...document.images].map(img => img.complete ? null :
    new Promise(done => { img.onload = img.onerror = done; })))
  .then(() => [...document.images].map(img => [img.getAttribute('src'), img.naturalWidth]))
"""


async def images_of(page: Any) -> list[tuple[str, int]]:
    return [(src, width) for src, width in await page.evaluate(ALL_IMAGES_LOADED)]


async def test_gallery_from_a_chat_link(studio: Studio, browser: Any) -> None:
    await make_posts(studio, "ann", "mia", ["latte on a balcony", "city walk at night"])
    chat = studio.console("ann")
    await run(chat, "/thread 2")
    await run(chat, "hold the latte higher")
    await run(chat, "/approve")
    await make_posts(studio, "bob", "zed", ["gym selfie"], workspace="shop-b")  # another workspace
    link = await studio.link("ann")
    assert link.startswith(f"http://127.0.0.1:{studio.settings.web_port}{LINK_PATH}")

    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    response = await page.goto(link)
    assert response is not None and response.status == 200
    assert page.url.endswith("/studio/posts")
    cards = page.locator("a.card.post")
    assert await cards.count() == 2
    ids = sorted([int(await cards.nth(i).get_attribute("data-post") or 0) for i in range(2)])
    ann = await studio.app.store.user("console", "ann")
    ann_posts = sorted(thread.id for thread in await studio.app.store.list_threads(ann.id))
    assert ids == ann_posts
    assert "gym selfie" not in await page.content()
    images = await images_of(page)
    assert len(images) == 2 and all(width > 0 for _, width in images), images

    # the filter by status: only the approved post
    await page.select_option("select[name=status]", "approved")
    await page.click("button[type=submit]")
    assert "status=approved" in page.url
    assert await cards.count() == 1 and await cards.first.get_attribute("data-post") == "2"

    # the approved post's page: its turn tree with instruction, scores and approval
    await page.goto(f"http://127.0.0.1:{studio.settings.web_port}/studio/posts/2")
    turns = page.locator(".turn")
    assert await turns.count() == 2
    assert "“hold the latte higher”" in await page.locator(".instruction").all_inner_texts()
    assert "0.90" in await page.locator(".score").first.inner_text()
    assert await page.locator(".turn .badge.approved").count() == 1
    log = await page.locator("#activity li").all_inner_texts()
    assert [await page.locator("#activity li").nth(i).get_attribute("data-action") for i in range(len(log))] == [
        "created",
        "edited",
        "approved",
    ]
    images = await images_of(page)
    assert images and all(width > 0 for _, width in images), images

    async with page.expect_download() as waiting:
        await page.click("#export")
    download = await waiting.value
    assert download.suggested_filename == "post-2.zip"
    data = (await download.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
    assert "manifest.json" in names and any(name.startswith("images/") for name in names)

    await page.goto(f"http://127.0.0.1:{studio.settings.web_port}/studio/personas")
    assert await page.locator("a.card.persona").count() == 1
    assert "mia" in await page.content() and "zed" not in await page.content()
    images = await images_of(page)
    assert images and all(width > 0 for _, width in images), images
    await context.close()


async def test_a_link_from_another_workspace_shows_only_its_posts(studio: Studio, browser: Any) -> None:
    await make_posts(studio, "ann", "mia", ["latte on a balcony"])
    await make_posts(studio, "bob", "zed", ["gym selfie", "protein shake"], workspace="shop-b")
    ann_link, bob_link = await studio.link("ann"), await studio.link("bob", workspace="shop-b")
    ann_thread = (await studio.app.store.list_threads((await studio.app.store.user("console", "ann")).id))[0]
    ann_image = (await studio.app.store.get_turn(ann_thread.current_turn_id or 0)).image_keys[0]

    page = await browser.new_page()
    await page.goto(bob_link)
    titles = await page.locator("a.card.post .title").all_inner_texts()
    assert len(titles) == 2 and not any("latte" in title for title in titles)
    for url in (f"/studio/posts/{ann_thread.id}", f"/studio/thumb/{ann_image}.webp", f"/studio/img/{ann_image}"):
        response = await page.goto(f"http://127.0.0.1:{studio.settings.web_port}{url}")
        assert response is not None and response.status == 404, url
        assert "latte" not in await page.content()
    # ann's link in the same browser switches it to ann's studio
    await page.goto(ann_link)
    assert await page.locator("a.card.post").count() == 1
    await page.close()


async def test_forged_altered_and_expired_links_get_403(studio: Studio, browser: Any) -> None:
    await make_posts(studio, "ann", "mia", ["latte on a balcony"])
    link = await studio.link("ann")
    token = link.rsplit("/", 1)[1]
    user_id = (await studio.app.store.user("console", "ann")).id
    secret = web_secret(studio.settings)

    class SignedYesterday(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 25 * 3600

    expired = URLSafeTimedSerializer(secret, salt=SALT, signer=SignedYesterday).dumps({"u": user_id})
    forged = URLSafeTimedSerializer("not-the-installation-secret", salt=SALT).dumps({"u": user_id})
    altered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    base = f"http://127.0.0.1:{studio.settings.web_port}"
    page = await browser.new_page()
    for bad in (expired, forged, altered, "nonsense"):
        response = await page.goto(f"{base}{LINK_PATH}{bad}")
        assert response is not None and response.status == 403, bad
        body = await page.content()
        assert "latte" not in body and "mia" not in body and "/gallery" in body
        response = await page.goto(f"{base}/studio/posts")  # no cookie was set
        assert response is not None and response.status == 403
    # a forged cookie is no better than a forged link
    await page.context.add_cookies([{"name": "ps_studio", "value": forged, "url": base}])
    response = await page.goto(f"{base}/studio/posts")
    assert response is not None and response.status == 403
    await page.close()
