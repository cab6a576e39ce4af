"""The inbox of acknowledged platform callbacks: nothing answered 200 may be lost.

A front end calls :meth:`Inbox.accept` in the step that decides to answer 200: the callback is
stored (one INSERT) unless its key is already there, which makes the row the dedupe key as
well, shared by every process on the database and independent of redis. The front end then
handles the item and calls :meth:`Inbox.done`; a start handles what :meth:`Inbox.pending` still
holds. Done rows are kept for ``retention`` (at least the replay window) and then purged.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.db import Database
from storage.models import InboxItem, InboxState, utcnow


class Inbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def accept(self, platform: str, key: str, payload: dict[str, Any]) -> int | None:
        """Store a callback; its row id, or None when ``(platform, key)`` is already stored (a repeat)."""
        insert = sqlite_insert if self.db.engine.dialect.name == "sqlite" else pg_insert
        statement = (
            insert(InboxItem)
            .values(platform=platform, key=key, payload=payload, state=InboxState.PENDING, received_at=utcnow())
            .on_conflict_do_nothing(index_elements=["platform", "key"])
            .returning(InboxItem.id)
        )
        async with self.db.session() as s:
            return (await s.execute(statement)).scalar_one_or_none()

    async def pending(self, platform: str) -> list[InboxItem]:
        """Items not handled yet, oldest first (the order they were acknowledged in)."""
        async with self.db.session() as s:
            rows = await s.scalars(
                select(InboxItem)
                .where(InboxItem.platform == platform, InboxItem.state == InboxState.PENDING)
                .order_by(InboxItem.id)
            )
            return list(rows)

    async def done(self, item_id: int) -> None:
        async with self.db.session() as s:
            await s.execute(
                update(InboxItem).where(InboxItem.id == item_id).values(state=InboxState.DONE, done_at=utcnow())
            )

    async def purge(self, platform: str, older_than: timedelta, *, now: datetime | None = None) -> int:
        """Drop done items received before ``now - older_than``; how many went."""
        cutoff = (now or utcnow()) - older_than
        async with self.db.session() as s:
            result = await s.execute(
                delete(InboxItem).where(
                    InboxItem.platform == platform,
                    InboxItem.state == InboxState.DONE,
                    InboxItem.received_at < cutoff,
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)
