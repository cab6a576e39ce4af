"""Read transactions on SQLite neither wait for nor block writers; a read session cannot write."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.db import Database, ReadOnlySession
from storage.models import User
from storage.repository import Store

#: a read that waited for the held write lock would wait the whole busy timeout (60 s)
GUARD_S = 10.0


async def test_reads_go_on_while_another_connection_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    store = Store(db)
    owner = await store.user("console", "reader", "Ann")
    await store.create_job("j1", "edit", {"i": 1}, user_id=owner.id, thread_id=None, platform="console")
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write transaction
    writer.execute("UPDATE users SET display_name = 'changed' WHERE id = ?", (owner.id,))
    try:
        job = await asyncio.wait_for(store.get_job("j1"), GUARD_S)
        same = await asyncio.wait_for(store.user("console", "reader"), GUARD_S)
        jobs = await asyncio.wait_for(store.user_jobs(owner.id), GUARD_S)
        assert job is not None and job.spec == {"i": 1}
        assert same.id == owner.id and same.display_name == "Ann"  # the committed snapshot
        assert [j.id for j in jobs] == ["j1"]
        # and a reader's open transaction does not block that writer from committing
        async with db.read() as s:
            assert (await s.scalar(select(User.display_name).where(User.id == owner.id))) == "Ann"
            writer.execute("COMMIT")
    finally:
        if writer.in_transaction:
            writer.execute("ROLLBACK")
        writer.close()
    assert (await store.get_user(owner.id)).display_name == "changed"
    await db.dispose()


async def test_a_read_session_refuses_to_write_and_changes_nothing(store: Store) -> None:
    with pytest.raises(ReadOnlySession):
        async with store.db.read() as s:
            s.add(User(platform="console", platform_user_id="intruder", display_name="x", settings={}))
    owner = await store.user("console", "owner", "Bob")
    with pytest.raises(ReadOnlySession):
        async with store.db.read() as s:
            user = await s.get(User, owner.id)
            assert user is not None
            user.display_name = "Mallory"
    async with store.db.read() as s:
        assert await s.scalar(select(User).where(User.platform_user_id == "intruder")) is None
    assert (await store.get_user(owner.id)).display_name == "Bob"


async def test_read_objects_stay_loaded_after_the_session(store: Store) -> None:
    owner = await store.user("console", "carol", "Carol")
    loaded = await store.get_user(owner.id)
    assert loaded.display_name == "Carol" and loaded.settings == {}  # no refresh of a detached row


async def test_concurrent_first_events_of_one_user_make_one_user(store: Store) -> None:
    users = await asyncio.gather(*(store.user("discord", "new-user", "New") for _ in range(20)))
    assert len({u.id for u in users}) == 1 and all(u.platform_user_id == "new-user" for u in users)
