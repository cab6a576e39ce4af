"""Front ends sharing one inbox (SQLite and PostgreSQL): each renews one lease of its own (a row
in ``inbox_owners``), however many rows it holds; a survivor takes a dead front end's unfinished
rows once that lease lapsed, and not before, or at once when it stopped cleanly (released them);
two survivors taking over at once never take the same row; a take-over with nothing to claim
takes no write lock, and its scan stays on the index; the purge drops leases gone long ago."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text

from storage.db import Database
from storage.inbox import DEFAULT_LEASE, Inbox
from storage.models import InboxItem, InboxOwner, InboxState, utcnow

PLATFORM = "wecom:corp:1"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


def record_statements(db: Database) -> list[tuple[str, int]]:
    """Each statement executed on ``db``'s engine from now on, with the rows it changed."""
    seen: list[tuple[str, int]] = []

    def after(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append((statement, cursor.rowcount))

    event.listen(db.engine.sync_engine, "after_cursor_execute", after)
    return seen


async def accept_many(inbox: Inbox, count: int, prefix: str = "msg") -> list[int]:
    ids = await asyncio.gather(*(inbox.accept(PLATFORM, f"{prefix}:{n}", {"n": str(n)}) for n in range(count)))
    assert all(isinstance(row_id, int) for row_id in ids)
    return sorted(row_id for row_id in ids if row_id is not None)


async def row_leases(db: Database) -> dict[int, Any]:
    async with db.read() as s:
        return {row_id: lease for row_id, lease in await s.execute(select(InboxItem.id, InboxItem.lease_until))}


async def test_a_beat_writes_the_front_ends_one_lease_however_many_rows_it_holds(db: Database) -> None:
    inbox = Inbox(db, owner="host:8001")
    await accept_many(inbox, 60)
    leases_before = await row_leases(db)
    statements = record_statements(db)

    await inbox.renew(PLATFORM)
    await inbox.renew(PLATFORM)

    writes = [(sql, rows) for sql, rows in statements if sql.split(None, 1)[0].upper() in {"INSERT", "UPDATE"}]
    assert len(writes) == 2  # one statement a beat
    assert all("inbox_owners" in sql and rows == 1 for sql, rows in writes), writes  # one row each
    assert await row_leases(db) == leases_before  # no inbox row rewritten
    async with db.read() as s:
        owners = (await s.execute(select(InboxOwner.platform, InboxOwner.owner, InboxOwner.lease_until))).all()
    assert [(platform, owner) for platform, owner, _ in owners] == [(PLATFORM, "host:8001")]
    lease = owners[0][2] if owners[0][2].tzinfo else owners[0][2].replace(tzinfo=UTC)  # SQLite's are naive
    assert lease > utcnow() + DEFAULT_LEASE / 2


async def test_a_front_end_without_an_owner_renews_nothing(db: Database) -> None:
    inbox = Inbox(db)  # Discord: one front end, rows without an owner
    await accept_many(inbox, 3)
    statements = record_statements(db)
    assert await inbox.renew(PLATFORM) is None
    assert statements == []


async def test_a_survivor_takes_a_dead_front_ends_rows_once_its_lease_lapsed_and_not_before(db: Database) -> None:
    dead, survivor = Inbox(db, owner="host:8001"), Inbox(db, owner="host:8002")
    start = utcnow()
    ids = await accept_many(dead, 3)
    await dead.unsent(ids[1], [{"kind": "text", "text": "hi"}])  # a reply still in its outbox
    await dead.done(ids[2])
    s = timedelta(seconds=1)

    # within the lease of the accept (before the front end's first beat): nothing to take
    assert await survivor.take_over(PLATFORM, now=start + DEFAULT_LEASE / 2) == []
    # the front end's beat holds its rows past their accept's lease ...
    await dead.renew(PLATFORM, now=start + 10 * s)
    assert await survivor.take_over(PLATFORM, now=start + DEFAULT_LEASE + 5 * s) == []
    # ... until it stops beating and its lease lapses: its unfinished rows go to the survivor
    taken = await survivor.take_over(PLATFORM, now=start + 10 * s + DEFAULT_LEASE + s)
    assert [(item.id, item.owner, item.state) for item in taken] == [
        (ids[0], "host:8002", InboxState.PENDING),
        (ids[1], "host:8002", InboxState.REPLYING),
    ]

    # now the survivor's: held by its own beats, taken by a third front end only once they stop
    third = Inbox(db, owner="host:8003")
    await survivor.renew(PLATFORM, now=start + 40 * s)
    assert await third.take_over(PLATFORM, now=start + 40 * s + DEFAULT_LEASE - s) == []
    later = await third.take_over(PLATFORM, now=start + 40 * s + DEFAULT_LEASE + s)
    assert [item.id for item in later] == ids[:2]


async def test_rows_without_an_owner_go_to_any_survivor_and_a_restart_takes_its_own_back(db: Database) -> None:
    ownerless = await accept_many(Inbox(db), 2, "plain")
    live = Inbox(db, owner="host:8001")
    mine = await accept_many(live, 2, "mine")
    await live.renew(PLATFORM)

    survivor = Inbox(db, owner="host:8002")
    assert [item.id for item in await survivor.take_over(PLATFORM)] == ownerless  # a live owner keeps its rows
    restarted = Inbox(db, owner="host:8001")  # the same front end started again: its rows at once
    assert [item.id for item in await restarted.take_over(PLATFORM, own_too=True)] == mine


async def test_a_front_end_that_stops_cleanly_hands_its_unfinished_rows_to_a_survivor_at_once(db: Database) -> None:
    stopping, survivor, third = (Inbox(db, owner=f"host:{port}") for port in (8001, 8002, 8003))
    now = utcnow()
    ids = await accept_many(stopping, 4)
    await stopping.unsent(ids[1], [{"kind": "text", "text": "hi"}])  # a reply still in its outbox
    await stopping.done(ids[3])
    await stopping.renew(PLATFORM, now=now)
    [kept] = await accept_many(survivor, 1, "kept")
    await survivor.renew(PLATFORM, now=now)
    assert await survivor.take_over(PLATFORM, now=now) == []  # held while it runs

    assert await stopping.release(PLATFORM) == 3  # the clean stop, its own handling over

    # the same moment: no waiting for a lease to lapse
    taken = await survivor.take_over(PLATFORM, now=now)
    assert [(item.id, item.owner, item.state) for item in taken] == [
        (ids[0], "host:8002", InboxState.PENDING),
        (ids[1], "host:8002", InboxState.REPLYING),
        (ids[2], "host:8002", InboxState.PENDING),
    ]
    async with db.read() as s:
        assert list(await s.scalars(select(InboxOwner.owner))) == ["host:8002"]
        assert await s.scalar(select(InboxItem.state).where(InboxItem.id == ids[3])) == InboxState.DONE
    # the survivor's rows, its own and those it took, stay its own
    assert await third.take_over(PLATFORM, now=now) == []
    assert kept not in [item.id for item in taken]


async def test_a_done_mark_still_being_written_at_a_clean_stop_is_not_handed_on(db: Database) -> None:
    stopping, survivor = Inbox(db, owner="host:8001"), Inbox(db, owner="host:8002")
    ids = await accept_many(stopping, 2)
    marking = asyncio.create_task(stopping.done(ids[0]))  # the reply went out; its mark is queued
    await asyncio.sleep(0)  # the task queues the mark (it then waits on the writer)
    marking.cancel()  # the handler cancelled by the stop: the mark is still written

    assert await stopping.release(PLATFORM) == 1

    assert [item.id for item in await survivor.take_over(PLATFORM)] == [ids[1]]
    async with db.read() as s:
        assert await s.scalar(select(InboxItem.state).where(InboxItem.id == ids[0])) == InboxState.DONE


async def test_a_clean_stop_of_a_front_end_without_an_owner_changes_nothing(db: Database) -> None:
    ownerless, live = Inbox(db), Inbox(db, owner="host:8001")  # ownerless: Discord, one front end
    await accept_many(ownerless, 2, "plain")
    await accept_many(live, 2, "live")
    await live.renew(PLATFORM)
    leases_before = await row_leases(db)
    statements = record_statements(db)

    assert await ownerless.release(PLATFORM) == 0

    assert statements == []
    assert await row_leases(db) == leases_before
    async with db.read() as s:
        assert list(await s.scalars(select(InboxOwner.owner))) == ["host:8001"]


async def test_a_take_over_with_nothing_to_claim_takes_no_write_lock(db: Database) -> None:
    """The keeper's take-over every beat only reads while there is nothing to claim (on SQLite a
    write transaction would hold off the accepts, whose answer time counts)."""
    live = Inbox(db, owner="host:8001")
    await accept_many(live, 3)
    await live.renew(PLATFORM)
    await live.done((await accept_many(live, 1, "done"))[0])
    statements: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))

    survivor = Inbox(db, owner="host:8002")
    assert await survivor.take_over(PLATFORM) == []
    assert await survivor.take_over(PLATFORM, own_too=True) == []  # its start: nothing of its own either
    assert await Inbox(db).take_over(PLATFORM, own_too=True) == []  # a front end without an owner

    verbs = [sql.split(None, 1)[0].upper() for sql in statements]
    assert verbs and set(verbs) == {"SELECT"}, statements  # no BEGIN IMMEDIATE (SQLite), no UPDATE


async def test_the_purge_drops_the_leases_of_front_ends_gone_long_ago(db: Database) -> None:
    gone, live = Inbox(db, owner="host:8001"), Inbox(db, owner="host:8002")
    [row_id] = await accept_many(gone, 1)
    start = utcnow()
    await gone.renew(PLATFORM, now=start - timedelta(hours=2))
    await live.renew(PLATFORM, now=start)

    await live.purge(PLATFORM, timedelta(hours=1), now=start)

    async with db.read() as s:
        assert list(await s.scalars(select(InboxOwner.owner))) == ["host:8002"]
    # its rows are not lost with it: a missing lease is a lapsed one
    taken = await live.take_over(PLATFORM, now=start + DEFAULT_LEASE + timedelta(seconds=1))
    assert [item.id for item in taken] == [row_id]


async def _wait_for_lock_waiters(db: Database, count: int, within_s: float = 10.0) -> None:
    """Until ``count`` lock requests on this PostgreSQL database are waiting."""
    deadline = asyncio.get_running_loop().time() + within_s
    query = text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted"
        " AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
    )
    while True:
        async with db.read() as s:
            if (await s.scalar(query) or 0) >= count:
                return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{count} take-overs never waited on the rows' locks")
        await asyncio.sleep(0.01)  # polling pg_locks for the state the test waits for


async def test_two_survivors_taking_over_at_once_never_take_the_same_row(db: Database) -> None:
    dead = Inbox(db, owner="host:8001")
    ids = await accept_many(dead, 40)
    await dead.renew(PLATFORM)
    lapsed = utcnow() + DEFAULT_LEASE + timedelta(seconds=1)
    # each survivor a process of its own: its own engine and connections
    dbs = [Database(db.url), Database(db.url)]
    survivors = [Inbox(dbs[0], owner="host:8002"), Inbox(dbs[1], owner="host:8003")]
    try:
        if db.engine.dialect.name == "postgresql":
            # both UPDATEs meet the same rows at once: a third transaction holds them until both wait
            async with db.engine.connect() as blocker:
                transaction = await blocker.begin()
                await blocker.execute(text("SELECT id FROM inbox FOR UPDATE"))
                racing = asyncio.gather(*(s.take_over(PLATFORM, now=lapsed) for s in survivors))
                await _wait_for_lock_waiters(db, 2)
                await transaction.commit()
                results = await racing
        else:  # SQLite: BEGIN IMMEDIATE makes the two writers take turns
            results = await asyncio.gather(*(s.take_over(PLATFORM, now=lapsed) for s in survivors))
    finally:
        for database in dbs:
            await database.dispose()

    first, second = ({item.id for item in taken} for taken in results)
    assert not first & second  # no row taken twice
    assert first | second == set(ids)
    async with db.read() as s:
        owners = dict((await s.execute(select(InboxItem.id, InboxItem.owner))).all())
    assert owners == {row_id: "host:8002" if row_id in first else "host:8003" for row_id in ids}


async def test_the_take_over_scans_the_unfinished_rows_by_index(tmp_path: Any) -> None:
    """SQLite's plans for the take-over's look and its claim: the inbox through (platform, state)
    for both unfinished states (not every row of the platform: done rows are kept a while),
    owners by their key."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
    try:
        await db.upgrade()
        inbox = Inbox(db, owner="host:8001")
        await accept_many(inbox, 3)
        statements: list[tuple[str, Any]] = []
        event.listen(
            db.engine.sync_engine,
            "before_cursor_execute",
            lambda _c, _cur, sql, params, *_: statements.append((sql, params)),
        )
        lapsed = utcnow() + DEFAULT_LEASE + timedelta(seconds=1)
        assert len(await Inbox(db, owner="host:8002").take_over(PLATFORM, now=lapsed)) == 3
        scans = [(sql, params) for sql, params in statements if "FROM inbox" in sql]
        assert [sql.split(None, 1)[0].upper() for sql, _ in scans] == ["SELECT", "UPDATE"]
        async with db.engine.connect() as conn:
            plans = [
                " | ".join(row[-1] for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
                for sql, params in scans
            ]
    finally:
        await db.dispose()
    for plan in plans:
        assert "SEARCH inbox USING INDEX ix_inbox_platform_state (platform=? AND state=?)" in plan, plan
        assert "SCAN inbox" not in plan, plan
        assert "SEARCH inbox_owners USING" in plan, plan
