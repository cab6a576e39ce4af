"""The web studio of a team: every member's link shows all posts of the workspace, filtered by
author, persona and state; posts in review are listed under "Review"; nothing of another
workspace is there (posts, personas, images), and a link naming a workspace the user is not a
member of is refused."""

from __future__ import annotations

import re

import aiohttp

from commands.web_links import LINK_PATH, sign_token
from storage.models import ThreadStatus
from storage.settings import web_secret
from tests.conversation.helpers import run
from tests.web.conftest import Studio, make_posts


def post_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-post="(\d+)"', html)]


async def test_members_see_the_workspaces_posts_with_filters_and_a_review_list(
    studio: Studio, http: aiohttp.ClientSession
) -> None:
    store = studio.app.store
    await make_posts(studio, "ann", "mia", ["latte on a balcony"])
    bob = studio.console("bob")
    await run(bob, "/post mia gym selfie")  # bob posts with ann's persona
    await make_posts(studio, "eve", "zed", ["rival shop"], workspace="shop-b")
    ann, bob_user = await store.user("console", "ann"), await store.user("console", "bob")
    local = await store.workspace("console", "local")
    posts = {t.owner_id: t.id for t in await store.list_threads_in(local.id)}
    await store.submit_for_review(
        posts[bob_user.id], (await store.get_thread(posts[bob_user.id])).current_turn_id, bob_user.id
    )

    async with http.get(await studio.link("cy")) as response:  # cy: a third member, with no post of her own
        assert response.status == 200
        html = await response.text()
    assert sorted(post_ids(html)) == sorted(posts.values())
    assert "rival shop" not in html and "zed" not in html
    review = html.split('id="review"', 1)[1].split("</section>", 1)[0]
    assert re.findall(r'data-review="(\d+)"', review) == [str(posts[bob_user.id])]

    async with http.get(f"{studio.base}/studio/posts?author={ann.id}") as response:
        assert post_ids(await response.text()) == [posts[ann.id]]
    async with http.get(f"{studio.base}/studio/posts?status={ThreadStatus.IN_REVIEW}") as response:
        assert post_ids(await response.text()) == [posts[bob_user.id]]
    mia = await store.find_persona_in(local.id, "mia")
    async with http.get(f"{studio.base}/studio/posts?persona={mia.id}&author={bob_user.id}") as response:
        assert post_ids(await response.text()) == [posts[bob_user.id]]

    # bob's post page, seen by cy: its author and its activity log
    async with http.get(f"{studio.base}/studio/posts/{posts[bob_user.id]}") as response:
        page = await response.text()
    assert "by bob" in page and 'data-action="created"' in page and 'data-action="submitted"' in page

    # another workspace's post and images answer 404 here
    shop_b = await store.workspace("console", "shop-b")
    (rival,) = await store.list_threads_in(shop_b.id)
    rival_image = (await store.get_turn(rival.current_turn_id or 0)).image_keys[0]
    for url in (f"/studio/posts/{rival.id}", f"/studio/img/{rival_image}", f"/studio/thumb/{rival_image}.webp"):
        async with http.get(f"{studio.base}{url}") as response:
            assert response.status == 404, url

    # a link naming a workspace the user never joined is refused
    cy = await store.user("console", "cy")
    forged_scope = sign_token(web_secret(studio.settings), cy.id, shop_b.id)
    async with http.get(f"{studio.base}{LINK_PATH}{forged_scope}", allow_redirects=False) as response:
        assert response.status == 403
