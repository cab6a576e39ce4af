"""Inbox accepts are group-committed: callbacks accepted together share one transaction, each
caller returns only once its own row is committed, a key twice in one batch is stored once, and a
batch that fails fails its own callers only. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.inbox import Inbox
from storage.models import InboxItem

PLATFORM = "wecom:test"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


def count_commits(db: Database) -> list[None]:
    """One entry per transaction committed on ``db``'s engine from now on."""
    commits: list[None] = []
    event.listen(db.engine.sync_engine, "commit", lambda _connection: commits.append(None))
    return commits


async def stored(url: str) -> dict[str, dict[str, Any]]:
    """The inbox rows as another process would see them: through a Database of its own."""
    fresh = Database(url)
    try:
        async with fresh.read() as s:
            return {item.key: item.payload for item in await s.scalars(select(InboxItem))}
    finally:
        await fresh.dispose()


async def test_accepts_together_share_a_transaction_and_each_returns_once_committed(db: Database) -> None:
    inbox = Inbox(db)
    await inbox.accept(PLATFORM, "warm-up", {})  # the first use opens the connection
    commits = count_commits(db)
    sqlite_file = make_url(db.url).database if db.engine.dialect.name == "sqlite" else None
    seen_at_return: dict[str, bool] = {}

    async def accept(n: int) -> int | None:
        row_id = await inbox.accept(PLATFORM, f"msg:{n}", {"Content": f"/help {n}"})
        if sqlite_file:  # read at once, without yielding to the loop: only a committed row is there
            with closing(sqlite3.connect(sqlite_file)) as other:
                found = other.execute("SELECT 1 FROM inbox WHERE key = ?", (f"msg:{n}",)).fetchone()
            seen_at_return[f"msg:{n}"] = found is not None
        return row_id

    ids = await asyncio.gather(*(accept(n) for n in range(30)))

    assert all(isinstance(row_id, int) for row_id in ids) and len(set(ids)) == 30
    assert 1 <= len(commits) < 30  # not one transaction per callback
    if sqlite_file:
        assert seen_at_return == {f"msg:{n}": True for n in range(30)}
    rows = await stored(db.url)
    assert {f"msg:{n}": {"Content": f"/help {n}"} for n in range(30)}.items() <= rows.items()


async def test_a_key_twice_in_one_batch_is_one_row_and_one_new(db: Database) -> None:
    inbox = Inbox(db)
    before = await inbox.accept(PLATFORM, "msg:old", {"n": "0"})
    commits = count_commits(db)

    results = await asyncio.gather(
        inbox.accept(PLATFORM, "msg:retried", {"n": "1"}),
        inbox.accept(PLATFORM, "msg:other", {"n": "2"}),
        inbox.accept(PLATFORM, "msg:retried", {"n": "1"}),  # WeCom's retry of the same MsgId
        inbox.accept(PLATFORM, "msg:old", {"n": "0"}),  # stored by an earlier batch
    )

    first, other, repeat, old = results
    assert len(commits) == 1  # the four were one batch
    assert isinstance(first, int) and isinstance(other, int) and first != other
    assert repeat is None and old is None  # each repeat is answered once, as a repeat
    assert before is not None
    assert await stored(db.url) == {"msg:old": {"n": "0"}, "msg:retried": {"n": "1"}, "msg:other": {"n": "2"}}


async def test_a_failing_batch_fails_its_own_callers_and_the_next_batch_is_stored(db: Database) -> None:
    inbox = Inbox(db, max_batch=2)
    unstorable = {"Content": object()}  # not JSON: the batch's INSERT cannot be sent

    results = await asyncio.gather(
        inbox.accept(PLATFORM, "msg:1", {"n": "1"}),
        inbox.accept(PLATFORM, "msg:bad", unstorable),
        inbox.accept(PLATFORM, "msg:3", {"n": "3"}),
        return_exceptions=True,
    )

    first, bad, third = results
    # the batch [msg:1, msg:bad] failed as a whole: both callers are told (no 200 for msg:1)
    assert isinstance(first, Exception) and isinstance(bad, Exception)
    assert isinstance(third, int)  # the next batch went on
    assert await stored(db.url) == {"msg:3": {"n": "3"}}
    # a failed accept left nothing behind: the platform's retry is stored as new
    assert isinstance(await inbox.accept(PLATFORM, "msg:1", {"n": "1"}), int)


async def test_accepts_and_done_marks_are_written_one_transaction_at_a_time(db: Database) -> None:
    """One writer in the process: a done mark asked for while accepts are being written waits for
    their transaction (and an accept for a done mark's) in the process, not on the database's lock
    (on SQLite that wait is the busy handler's sleep)."""
    inbox = Inbox(db, max_batch=4)
    first = [await inbox.accept(PLATFORM, f"msg:{n}", {"n": str(n)}) for n in range(12)]
    open_now, most_open = 0, 0
    writing = asyncio.Event()
    session = db.session

    @asynccontextmanager
    async def counted() -> AsyncIterator[AsyncSession]:
        """A write session, counted from the moment it is asked for (before any lock wait)."""
        nonlocal open_now, most_open
        open_now += 1
        most_open = max(most_open, open_now)
        writing.set()
        try:
            async with session() as s:
                yield s
        finally:
            open_now -= 1

    db.session = counted  # type: ignore[method-assign]
    accepting = asyncio.gather(*(inbox.accept(PLATFORM, f"msg:{n}", {"n": str(n)}) for n in range(12, 24)))
    await writing.wait()  # the first batch of accepts is being written
    await asyncio.gather(*(inbox.done(row_id) for row_id in first if row_id is not None))
    accepted = await accepting

    assert most_open == 1
    assert all(isinstance(row_id, int) for row_id in accepted)
    async with db.read() as s:
        states = {key: state for key, state in await s.execute(select(InboxItem.key, InboxItem.state))}
    assert states == {f"msg:{n}": "done" if n < 12 else "pending" for n in range(24)}
