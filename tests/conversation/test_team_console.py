"""Console team work: the console's users share the `local` workspace. A persona and a product
made by one member are used by another (the same persona id and portrait); a member's delete
or train of another's persona, and delete of another's product, are refused; the activity log
shows who did what; a stored notice reaches its user with their next command."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

from bot.app import App
from bot.console import ConsoleFrontEnd
from tests.conversation.conftest import png_bytes
from tests.conversation.helpers import errors, job_spec, run, texts


def _console(app: App, tmp_path: Path, user: str) -> ConsoleFrontEnd:
    return ConsoleFrontEnd(app.conversation, tmp_path / user, user=user, stream=io.StringIO(), live=False)


async def test_a_member_posts_with_anothers_persona_and_product(app: App, tmp_path: Path) -> None:
    ann = _console(app, tmp_path, "ann")
    await run(ann, "/persona create sweet Mia")
    (tmp_path / "mug.png").write_bytes(png_bytes(color="teal"))
    await run(ann, f"/product add mug @{tmp_path / 'mug.png'}")
    store = app.store
    local = await store.workspace("console", "local")
    mia = await store.find_persona_in(local.id, "mia")
    assert mia is not None and mia.reference_key

    bob = _console(app, tmp_path, "bob")  # delivers the console's results from now on
    assert "Mia" in texts(await bob.send("/persona list"))
    assert "mug" in texts(await bob.send("/product list"))
    await run(bob, "/post mia product=mug holding the mug")
    bob_user = await store.user("console", "bob")
    post = await store.get_thread(bob_user.current_thread_id)
    assert (post.persona_id, post.owner_id, post.workspace_id) == (mia.id, bob_user.id, local.id)
    (first,) = await store.turns(post.id)
    spec = await job_spec(store, first)
    # the same persona: its id and its portrait, and ann's mug from the shared library
    assert spec["persona"]["persona_id"] == mia.id and spec["persona"]["reference_key"] == mia.reference_key
    assert [(r["role"], r["name"]) for r in spec["references"]] == [("product", "mug")]

    # deleting or training ann's persona, or deleting her product: the creator's or an admin's
    refused = [
        errors(await bob.send(line)) for line in ("/persona delete Mia", "/persona train Mia", "/product delete mug")
    ]
    assert all(r and "Only the creator of" in r[0] for r in refused), refused
    assert await store.find_persona_in(local.id, "Mia") is not None
    assert await store.find_product_in(local.id, "mug") is not None
    assert not await store.user_jobs(bob_user.id)  # no training was queued

    # ann is not the post's author: she cannot edit it; both see it in the workspace's list
    ann_user = await store.user("console", "ann")
    await store.set_current_thread(ann_user.id, post.id)
    assert "Only the author of this post" in errors(await ann.send("brighter please"))[0]
    listed = texts(await ann.send("/threads all"))
    assert f"#{post.id}" in listed and "bob" in listed
    assert f"#{post.id}" not in texts(await ann.send("/threads"))

    # the activity log in /history: who created the post
    history = texts(await bob.send("/history"))
    assert "Activity:" in history and "bob created the post: holding the mug" in history

    # the creator may delete her product; a stored notice comes with bob's next command
    assert not errors(await ann.send("/product delete mug"))
    await store.add_notice(bob_user.id, "Your persona “Mia” is now called “Mia-2”")
    answer = await bob.send("/product list")
    assert answer[0].text.startswith("📣 Your persona “Mia” is now called “Mia-2”")
    assert "empty" in texts(answer)
    assert not any(t.startswith("📣") for t in texts(await bob.send("/product list")).splitlines())


async def test_team_command_roles_and_admins(app: App, tmp_path: Path) -> None:
    """/team shows members and roles; only admins (ADMIN_IDS here) give roles or switch review."""
    app.conversation.config = replace(app.conversation.config, admin_ids=("boss",))
    boss, ann = _console(app, tmp_path, "boss"), _console(app, tmp_path, "ann")
    assert "Only an admin" in errors(await ann.send("/team review on"))[0]
    assert "Only an admin" in errors(await ann.send("/team role boss member"))[0]
    assert not errors(await boss.send("/team role ann reviewer"))
    assert not errors(await boss.send("/团队 审核 开"))
    shown = texts(await ann.send("/team"))
    assert "Review: on" in shown and "ann (ann): reviewer" in shown and "you: reviewer" in shown
    assert "No member 'zed'" in errors(await boss.send("/team role zed admin"))[0]
    assert "ole must be one of" in errors(await boss.send("/team role ann owner"))[0]
