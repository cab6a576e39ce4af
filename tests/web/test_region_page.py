"""The studio's "Edit a region" page in chromium (Playwright): clicks -> a mask preview from the
server after each click (SAM on the cached image embedding) -> an instruction -> a new turn in the
post, which the chat thread gets too."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.web.conftest import Studio, make_posts


async def _open(studio: Studio, browser: Any, user: str = "ann") -> tuple[Any, int]:
    await make_posts(studio, user, "mia", ["latte on a balcony"])
    owner = await studio.app.store.user("console", user)
    post = (await studio.app.store.list_threads(owner.id))[0].id
    context = await browser.new_context(viewport={"width": 390, "height": 800}, has_touch=True)  # a phone
    page = await context.new_page()
    await page.goto(await studio.link(user))
    response = await page.goto(f"{studio.base}/studio/posts/{post}/region?image=1")
    assert response is not None and response.status == 200
    return page, post


async def test_clicks_show_the_mask_after_each_click(studio: Studio, browser: Any) -> None:
    page, _post = await _open(studio, browser)
    picture = page.locator("#picture")
    await picture.wait_for()
    box = await picture.bounding_box()
    assert box is not None
    await page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    await page.locator("#stage[data-previews='1']").wait_for()  # (the page's CSP forbids eval'd predicates)
    await page.keyboard.down("Shift")
    await page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.8)
    await page.keyboard.up("Shift")
    await page.locator("#stage[data-previews='2']").wait_for()
    assert await page.locator(".dot.pos").count() == 1 and await page.locator(".dot.neg").count() == 1
    overlay = await page.evaluate(
        "(() => { const o = document.getElementById('overlay'); return [o.hidden, o.naturalWidth]; })()"
    )
    assert overlay == [False, 64]
    assert "Mask:" in await page.locator("#status").inner_text()
    segmenter = studio.web.state.previews.segmenter
    assert segmenter.stats["embeddings"] == 1 and segmenter.stats["masks"] == 2  # the embedding once


async def test_an_instruction_makes_a_new_turn_that_the_chat_gets(studio: Studio, browser: Any) -> None:
    page, post = await _open(studio, browser)
    chat = studio.console("ann")  # the post's chat: its results are delivered here
    before = {turn.id for turn in await studio.app.store.turns(post)}
    box = await page.locator("#picture").bounding_box()
    assert box is not None
    await page.touchscreen.tap(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)  # a phone tap
    await page.locator("#stage[data-previews='1']").wait_for()  # (the page's CSP forbids eval'd predicates)
    await page.fill("#instruction", "make it red linen")
    await page.click("#submit")
    await page.wait_for_url(f"**/studio/posts/{post}")
    turns = [turn for turn in await studio.app.store.turns(post) if turn.id not in before]
    assert len(turns) == 1 and turns[0].instruction == "make it red linen"
    region = turns[0].params["region"]
    assert region["source"] == "mask" and studio.app.blobs.exists(region["mask_key"])
    await chat.wait_job(str(turns[0].job_id), limit_s=60)
    assert (await studio.app.store.get_job(str(turns[0].job_id))).delivered
    assert f"Edit #{turns[0].id}: make it red linen" in chat.stream.getvalue()  # type: ignore[attr-defined]
    await page.reload()
    mask = page.locator(f"img[alt='mask of turn {turns[0].id} image 1']")
    assert await mask.count() == 1  # the turn tree shows the mask over the image
    assert await mask.evaluate("img => img.complete && img.naturalWidth > 0")


async def test_another_workspaces_post_and_a_forged_form_are_refused(
    studio: Studio, http: aiohttp.ClientSession
) -> None:
    await make_posts(studio, "ann", "mia", ["latte on a balcony"])
    ann = await studio.app.store.user("console", "ann")
    post = (await studio.app.store.list_threads(ann.id))[0].id
    await make_posts(studio, "bob", "zed", ["gym selfie"], workspace="shop-b")  # another workspace
    await http.get(await studio.link("bob", workspace="shop-b"))
    async with http.get(f"{studio.base}/studio/posts/{post}/region") as response:
        assert response.status == 404
    await http.get(await studio.link("ann"))
    body = json.dumps({"image": 0, "points": [[10, 10, True]], "csrf": "forged"})
    async with http.post(f"{studio.base}/studio/posts/{post}/region/preview", data=body) as response:
        assert response.status == 403
