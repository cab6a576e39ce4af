"""Migration 0008 (a lease per front end, ``inbox_owners``) on a database holding inbox rows of
0007 (SQLite and PostgreSQL): no row is lost, a row whose lease still holds (its front end may be
alive and upgrading later) is not taken, the lapsed and the ownerless are; and back down."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from storage.db import Database
from storage.inbox import Inbox
from storage.models import utcnow

BEFORE = "0007"
PLATFORM = "wecom:corp:1"

#: the inbox as 0007 left it (not the model: that follows the head)
_inbox = sa.table(
    "inbox",
    sa.column("id", sa.Integer),
    sa.column("platform", sa.String),
    sa.column("key", sa.String),
    sa.column("payload", sa.JSON),
    sa.column("state", sa.String),
    sa.column("received_at", sa.DateTime(timezone=True)),
    sa.column("owner", sa.String),
    sa.column("lease_until", sa.DateTime(timezone=True)),
    sa.column("reply", sa.JSON),
    sa.column("reply_attempts", sa.Integer),
)


async def test_0008_keeps_the_inbox_rows_of_0007_and_their_leases(database_url: str) -> None:
    now = utcnow()
    minute = timedelta(minutes=1)
    rows = [  # id, state, owner, lease
        (1, "pending", "old:8001", now + minute),  # its front end still runs the old code, renewing its rows
        (2, "replying", "old:8002", now - minute),  # its front end died before the upgrade
        (3, "pending", None, None),  # accepted without an owner
        (4, "done", "old:8002", now - minute),
    ]
    db = Database(database_url)
    try:
        await db.upgrade(BEFORE)
        async with db.session() as s:
            for row_id, state, owner, lease in rows:
                await s.execute(
                    sa.insert(_inbox).values(
                        id=row_id,
                        platform=PLATFORM,
                        key=f"msg:{row_id}",
                        payload={"n": row_id},
                        state=state,
                        received_at=now - 2 * minute,
                        owner=owner,
                        lease_until=lease,
                        reply=[{"kind": "text", "text": "hi"}] if state == "replying" else None,
                        reply_attempts=1 if state == "replying" else 0,
                    )
                )

        await db.upgrade()

        assert await db.current_revision() == "0008"
        survivor = Inbox(db, owner="new:8003")
        taken = await survivor.take_over(PLATFORM)
        assert [(item.id, item.state, item.payload) for item in taken] == [
            (2, "replying", {"n": 2}),
            (3, "pending", {"n": 3}),
        ]
        # the old front end's row is held by its own lease, and taken once that lapsed
        await survivor.renew(PLATFORM, now=now + 2 * minute)  # (the survivor's rows stay its own)
        assert [item.id for item in await survivor.take_over(PLATFORM, now=now + minute - timedelta(seconds=1))] == []
        assert [item.id for item in await survivor.take_over(PLATFORM, now=now + 2 * minute)] == [1]

        await db.downgrade(BEFORE)
        async with db.read() as s:
            kept = (await s.execute(sa.select(_inbox.c.id, _inbox.c.owner).order_by(_inbox.c.id))).all()
            tables = await s.run_sync(lambda sync: sa.inspect(sync.connection()).get_table_names())
        assert [tuple(row) for row in kept] == [(1, "new:8003"), (2, "new:8003"), (3, "new:8003"), (4, "old:8002")]
        assert "inbox_owners" not in tables
        await db.upgrade()
        assert await db.current_revision() == "0008"
    finally:
        await db.dispose()
