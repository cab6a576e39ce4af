"""Issue 20, answer time: a command's storage work in fewer trips, on SQLite and PostgreSQL.

* :meth:`Database.transaction`: the write sessions opened inside it are one transaction (all
  committed together, or none), for the task that opened it only;
* :meth:`Store.known_context`: a known user, the workspace, the role there and waiting notices in
  one SELECT;
* reads run without a transaction of their own: each SELECT sees what is committed when it runs
  (PostgreSQL's READ COMMITTED, on SQLite too).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event, select

from storage.db import Database
from storage.models import JobStatus, User, WorkspaceRole
from storage.repository import Store


def _commits(store: Store) -> list[int]:
    """A list that grows by one at every commit the store's engine makes."""
    seen: list[int] = []
    event.listen(store.db.engine.sync_engine, "commit", lambda conn: seen.append(1))
    return seen


async def test_writes_inside_a_transaction_commit_once_together(store: Store) -> None:
    owner = await store.user("console", "ann", "Ann")
    persona = await store.create_persona(owner.id, "Mia", "sweet", [], seed=1)
    commits = _commits(store)
    async with store.transaction():
        thread = await store.create_thread(
            platform="console", owner_id=owner.id, persona_id=persona.id, title="t", prompt="p"
        )
        await store.create_job("j1", "generate", {}, user_id=owner.id, thread_id=thread.id, platform="console")
        async with store.transaction():  # nested: part of the outer one
            await store.set_current_thread(owner.id, thread.id)
    assert len(commits) == 1
    assert (await store.get_job("j1")) is not None
    assert (await store.get_user(owner.id)).current_thread_id == thread.id


async def test_an_error_inside_a_transaction_keeps_none_of_its_writes(store: Store) -> None:
    owner = await store.user("console", "ann", "Ann")
    persona = await store.create_persona(owner.id, "Mia", "sweet", [], seed=1)
    with pytest.raises(RuntimeError, match="after the thread"):
        async with store.transaction():
            await store.create_thread(
                platform="console", owner_id=owner.id, persona_id=persona.id, title="t", prompt="p"
            )
            raise RuntimeError("after the thread")
    assert await store.list_threads(owner.id) == []
    # and the store goes on working after it
    await store.create_thread(platform="console", owner_id=owner.id, persona_id=persona.id, title="t", prompt="p")
    assert len(await store.list_threads(owner.id)) == 1


async def test_a_task_started_inside_a_transaction_commits_on_its_own(store: Store) -> None:
    owner = await store.user("console", "ann", "Ann")
    finished = asyncio.Event()

    async def elsewhere() -> None:
        await store.user("console", "bo", "Bo")  # another row: no lock shared with the block's
        finished.set()

    async with store.transaction():
        await store.set_current_thread(owner.id, None)
        task = asyncio.create_task(elsewhere())  # copies the context, but is another task
        if store.db.url.startswith("postgresql"):
            await asyncio.wait_for(finished.wait(), 10)  # its own commit, while the block is open
            assert (await store.known_context("console", "bo", "")) is not None
    await asyncio.wait_for(task, 70)  # SQLite: it waits for the write lock, then commits
    assert (await store.known_context("console", "bo", "")) is not None


async def test_known_context_reads_user_workspace_role_and_notices(store: Store) -> None:
    assert await store.known_context("discord", "42", "777") is None  # a user never seen
    user = await store.user("discord", "42", "Ann")
    known = await store.known_context("discord", "42", "777")
    assert known is not None and known.user.id == user.id
    assert known.workspace is None and known.role is None and known.notices is False
    workspace = await store.workspace("discord", "777", "Shop")
    known = await store.known_context("discord", "42", "777")
    assert known is not None and known.workspace is not None and known.workspace.id == workspace.id
    assert known.role is None  # not a member yet
    await store.join_workspace(workspace.id, user.id, WorkspaceRole.REVIEWER)
    await store.add_notice(user.id, "your post was approved")
    known = await store.known_context("discord", "42", "777")
    assert known is not None and known.role == WorkspaceRole.REVIEWER and known.notices is True
    assert await store.take_notices(user.id) == ["your post was approved"]
    known = await store.known_context("discord", "42", "777")
    assert known is not None and known.notices is False
    other = await store.known_context("discord", "42", "888")  # another server: not made yet
    assert other is not None and other.workspace is None and other.role is None


async def test_a_read_sees_what_was_committed_before_each_select(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.upgrade()
    store = Store(db)
    owner = await store.user("console", "ann", "Ann")
    async with db.read() as s:
        assert await s.scalar(select(User.display_name).where(User.id == owner.id)) == "Ann"
        await store.user("console", "ann", "Anna")  # committed by another session meanwhile
        assert await s.scalar(select(User.display_name).where(User.id == owner.id)) == "Anna"
    await db.dispose()


async def test_the_unfinished_job_count_counts_without_loading_rows(store: Store) -> None:
    owner = await store.user("console", "ann", "Ann")
    other = await store.user("console", "bo", "Bo")
    for i in range(3):
        spec = {"big": "x" * 1000}
        await store.create_job(f"a{i}", "edit", spec, user_id=owner.id, thread_id=None, platform="console")
    await store.create_job("b0", "edit", {}, user_id=other.id, thread_id=None, platform="console")
    await store.start_job("a1")
    await store.start_job("a2")
    assert await store.finish_job("a2", JobStatus.DONE)
    assert await store.unfinished_job_count(owner.id) == 2  # a0 waiting, a1 running; a2 done
    assert await store.unfinished_job_count(other.id) == 1
    assert await store.unfinished_job_count(owner.id + other.id + 100) == 0
