"""Workspaces, roles, scoped lookups, notices, the activity log and review states, on SQLite and
PostgreSQL."""

from __future__ import annotations

import pytest

from storage.activity import PostAction, ReviewStateError
from storage.models import ThreadStatus, WorkspaceRole
from storage.repository import DuplicateName, Store

MIX = [("sweet/a", 1.0)]


async def test_workspaces_are_made_once_per_key_and_keep_their_names(store: Store) -> None:
    guild = await store.workspace("discord", "1001", name="Shop A")
    assert (await store.workspace("discord", "1001")).id == guild.id
    renamed = await store.workspace("discord", "1001", name="Shop A+")
    assert renamed.id == guild.id and (await store.get_workspace(guild.id)).name == "Shop A+"
    other = await store.workspace("discord", "1002")
    dm = await store.workspace("discord", "dm:42", personal=True)
    assert len({guild.id, other.id, dm.id}) == 3
    assert dm.personal and not guild.personal and not guild.review
    await store.set_review(guild.id, True)
    assert (await store.get_workspace(guild.id)).review
    assert not (await store.get_workspace(other.id)).review


async def test_names_are_unique_per_workspace_and_lookups_stay_inside_it(store: Store) -> None:
    ann, bob = await store.user("discord", "1"), await store.user("discord", "2")
    shop, rival = await store.workspace("discord", "1001"), await store.workspace("discord", "1002")
    mia = await store.create_persona(ann.id, "Mia", "sweet", MIX, seed=1, workspace_id=shop.id)
    with pytest.raises(DuplicateName, match="already has a persona named 'mia'"):
        await store.create_persona(bob.id, "mia", "sweet", MIX, seed=2, workspace_id=shop.id)
    theirs = await store.create_persona(bob.id, "Mia", "boss", MIX, seed=3, workspace_id=rival.id)

    # a second member finds the same persona by name; nothing of the other server is visible
    assert (await store.find_persona_in(shop.id, "MIA")).id == mia.id
    assert (await store.find_persona_in(rival.id, "mia")).id == theirs.id
    assert await store.persona_in(shop.id, theirs.id) is None
    assert (await store.persona_in(shop.id, mia.id)).owner_id == ann.id
    assert [p.id for p in await store.list_personas_in(shop.id)] == [mia.id]

    mug = await store.create_product(bob.id, "mug", "k" * 64, workspace_id=shop.id)
    with pytest.raises(DuplicateName):
        await store.create_product(ann.id, "MUG", "k" * 64, workspace_id=shop.id)
    assert (await store.find_product_in(shop.id, "Mug")).id == mug.id
    assert await store.find_product_in(rival.id, "mug") is None
    await store.delete_product(mug.id)
    assert await store.list_products_in(shop.id) == []
    await store.create_product(ann.id, "mug", "k" * 64, workspace_id=shop.id)  # the name is free again

    post = await store.create_thread(platform="discord", owner_id=bob.id, persona_id=mia.id, title="t", prompt="p")
    assert post.workspace_id == shop.id  # a post lives where its persona does; bob is its author
    assert (await store.thread_in(shop.id, post.id)).owner_id == bob.id
    assert await store.thread_in(rival.id, post.id) is None


async def test_owner_keyed_calls_use_the_home_workspace(store: Store) -> None:
    """Without a workspace, a persona goes to its owner's home (console: `local`; Discord: personal)."""
    ann, bob = await store.user("console", "ann"), await store.user("console", "bob")
    dee = await store.user("discord", "55", "Dee")
    mia = await store.create_persona(ann.id, "Mia", "sweet", MIX, seed=1)
    local = await store.workspace("console", "local")
    assert mia.workspace_id == local.id
    assert (await store.find_persona_in(local.id, "mia")).id == mia.id
    assert {m.user.id for m in await store.members(local.id)} == {ann.id}
    zoe = await store.create_persona(dee.id, "Zoe", "sweet", MIX, seed=1)
    personal = await store.get_workspace(zoe.workspace_id)
    assert (personal.external_id, personal.personal) == ("dm:55", True)
    assert await store.role_of(personal.id, dee.id) == WorkspaceRole.ADMIN
    assert await store.role_of(personal.id, bob.id) is None


async def test_roles_members_and_reviewers(store: Store) -> None:
    shop = await store.workspace("wecom", "ww-1")
    ann, bob, cy = [await store.user("wecom", n, n.title()) for n in ("ann", "bob", "cy")]
    assert await store.join_workspace(shop.id, ann.id) == WorkspaceRole.MEMBER
    assert await store.join_workspace(shop.id, bob.id) == WorkspaceRole.MEMBER
    assert await store.join_workspace(shop.id, bob.id, WorkspaceRole.ADMIN) == WorkspaceRole.MEMBER  # kept
    await store.set_role(shop.id, cy.id, WorkspaceRole.ADMIN)  # joins with the role
    await store.set_role(shop.id, ann.id, WorkspaceRole.REVIEWER)
    members = await store.members(shop.id)
    assert [(m.user.display_name, m.role) for m in members] == [("Cy", "admin"), ("Ann", "reviewer"), ("Bob", "member")]
    assert [u.id for u in await store.reviewers(shop.id)] == [cy.id, ann.id]
    assert await store.role_of(shop.id, bob.id) == WorkspaceRole.MEMBER
    other = await store.workspace("wecom", "ww-2")
    assert await store.role_of(other.id, cy.id) is None  # a role holds in its workspace only
    assert await store.members(other.id) == []


async def test_notices_are_taken_once_in_order(store: Store) -> None:
    ann = await store.user("console", "ann")
    await store.add_notice(ann.id, "first")
    await store.add_notice(ann.id, "second")
    assert await store.take_notices(ann.id) == ["first", "second"]
    assert await store.take_notices(ann.id) == []


async def test_review_round_trip_is_logged(store: Store) -> None:
    author, lead = await store.user("discord", "1", "Ann"), await store.user("discord", "2", "Lee")
    shop = await store.workspace("discord", "1001")
    mia = await store.create_persona(author.id, "Mia", "sweet", MIX, seed=1, workspace_id=shop.id)
    post = await store.create_thread(platform="discord", owner_id=author.id, persona_id=mia.id, title="t", prompt="p")
    await store.log_activity(post.id, author.id, PostAction.CREATED, detail="a latte")
    first = await store.add_turn(thread_id=post.id, parent_id=None, kind="generate", instruction="a latte")
    with pytest.raises(ReviewStateError, match="is open"):
        await store.send_back(post.id, lead.id, "too dark")  # nothing in review

    await store.submit_for_review(post.id, first.id, author.id)
    assert (await store.get_thread(post.id)).status == ThreadStatus.IN_REVIEW
    assert await store.send_back(post.id, lead.id, "too dark") == first.id
    reopened = await store.get_thread(post.id)
    assert (reopened.status, reopened.review_turn_id) == (ThreadStatus.OPEN, None)

    second = await store.add_turn(thread_id=post.id, parent_id=first.id, kind="edit", instruction="brighter")
    await store.log_activity(post.id, author.id, PostAction.EDITED, turn_id=second.id, detail="brighter")
    await store.submit_for_review(post.id, second.id, author.id)
    assert (await store.get_thread(post.id)).review_turn_id == second.id
    await store.approve_turn(post.id, second.id, lead.id)
    assert (await store.get_thread(post.id)).status == ThreadStatus.APPROVED
    assert [t.id for t in await store.approved_turns(post.id)] == [second.id]

    log = [(e.who, e.action, e.turn_id, e.detail) for e in await store.activity(post.id)]
    assert log == [
        ("Ann", PostAction.CREATED, None, "a latte"),
        ("Ann", PostAction.SUBMITTED, first.id, ""),
        ("Lee", PostAction.SENT_BACK, first.id, "too dark"),
        ("Ann", PostAction.EDITED, second.id, "brighter"),
        ("Ann", PostAction.SUBMITTED, second.id, ""),
        ("Lee", PostAction.APPROVED, second.id, ""),
    ]
    assert (await store.activity(post.id))[2].as_dict()["action"] == "sent_back"

    await store.set_thread_status(post.id, ThreadStatus.CANCELLED)
    with pytest.raises(ReviewStateError, match="cancelled"):
        await store.submit_for_review(post.id, second.id, author.id)


async def test_filters_of_a_workspaces_posts(store: Store) -> None:
    ann, bob = await store.user("discord", "1"), await store.user("discord", "2")
    shop = await store.workspace("discord", "1001")
    mia = await store.create_persona(ann.id, "Mia", "sweet", MIX, seed=1, workspace_id=shop.id)
    zoe = await store.create_persona(bob.id, "Zoe", "sweet", MIX, seed=1, workspace_id=shop.id)
    posts = [
        await store.create_thread(platform="discord", owner_id=o.id, persona_id=p.id, title="t", prompt="p")
        for o, p in ((ann, mia), (bob, mia), (bob, zoe))
    ]
    await store.set_thread_status(posts[1].id, ThreadStatus.IN_REVIEW)
    ids = [t.id for t in await store.list_threads_in(shop.id)]
    assert ids == [posts[2].id, posts[1].id, posts[0].id]
    assert [t.id for t in await store.list_threads_in(shop.id, author_id=bob.id)] == [posts[2].id, posts[1].id]
    assert [t.id for t in await store.list_threads_in(shop.id, persona_id=mia.id, author_id=bob.id)] == [posts[1].id]
    assert [t.id for t in await store.list_threads_in(shop.id, status="in_review")] == [posts[1].id]
    assert await store.list_threads_in((await store.workspace("discord", "9")).id) == []


async def test_studio_reads_show_a_workspace_and_nothing_of_another(store: Store) -> None:
    from storage.studio_reads import StudioReads

    reads = StudioReads(store.db)
    ann, bob = await store.user("discord", "1", "Ann"), await store.user("discord", "2", "Bob")
    shop, rival = await store.workspace("discord", "1001"), await store.workspace("discord", "1002")
    mia = await store.create_persona(ann.id, "Mia", "sweet", MIX, seed=1, workspace_id=shop.id)
    await store.persona_ready(mia.id, "p" * 64, None)
    theirs = await store.create_persona(bob.id, "Mia", "sweet", MIX, seed=1, workspace_id=rival.id)
    await store.persona_ready(theirs.id, "q" * 64, None)
    await store.create_product(bob.id, "mug", "m" * 64, workspace_id=shop.id)
    mine = await store.create_thread(platform="discord", owner_id=bob.id, persona_id=mia.id, title="t", prompt="p")
    turn = await store.add_turn(thread_id=mine.id, parent_id=None, kind="generate", image_keys=["a" * 64])
    await store.set_current_turn(mine.id, turn.id)
    other = await store.create_thread(platform="discord", owner_id=bob.id, persona_id=theirs.id, title="t", prompt="p")
    await store.add_turn(thread_id=other.id, parent_id=None, kind="generate", image_keys=["b" * 64])

    cards = await reads.post_cards(workspace_id=shop.id)
    assert [(c.id, c.author_name, c.persona_name, c.cover_key) for c in cards] == [(mine.id, "Bob", "Mia", "a" * 64)]
    assert await reads.post_cards(workspace_id=shop.id, owner_id=ann.id) == []
    assert [c.id for c in await reads.post_cards(bob.id)] == [other.id, mine.id]  # an author's, everywhere
    assert await reads.workspace_image_keys(shop.id) == {"a" * 64, "p" * 64, "m" * 64}
    assert await reads.workspace_post_counts(shop.id) == {mia.id: 1}
