"""The inbox of acknowledged platform callbacks: nothing answered 200 may be lost.

A front end calls :meth:`Inbox.accept` in the step that decides to answer 200: the callback is
stored (one INSERT) unless its key is already there, which makes the row the dedupe key as
well, shared by every process on the database and independent of redis. The front end then
handles the item and calls :meth:`Inbox.done`; a start handles what :meth:`Inbox.pending` still
holds. Done rows are kept for ``retention`` (at least the replay window) and then purged.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.db import Database
from storage.models import InboxItem, InboxState, utcnow


class Inbox:
    """Accepts are group-committed: callbacks arriving together are stored in one transaction
    (one row and one statement each), so 50 callbacks in flight cost one commit, not 50 queued
    behind SQLite's single writer."""

    def __init__(self, db: Database, *, max_batch: int = 200) -> None:
        self.db = db
        self.max_batch = max_batch
        self._waiting: list[tuple[str, str, dict[str, Any], asyncio.Future[int | None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def accept(self, platform: str, key: str, payload: dict[str, Any]) -> int | None:
        """Store a callback; its row id, or None when ``(platform, key)`` is already stored (a repeat).
        Returns once the row is committed; raises when it could not be."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((platform, key, payload, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="inbox-flush")
        return await future

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            try:
                ids = await self._insert(batch)
            except Exception as exc:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_, future), row_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(row_id)

    async def _insert(
        self, batch: list[tuple[str, str, dict[str, Any], asyncio.Future[int | None]]]
    ) -> list[int | None]:
        """One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING: the ids of the new rows, None
        for keys already stored (and for a key's second appearance in the batch)."""
        insert = sqlite_insert if self.db.engine.dialect.name == "sqlite" else pg_insert
        first: dict[tuple[str, str], int] = {}
        for index, (platform, key, _, _) in enumerate(batch):
            first.setdefault((platform, key), index)
        now = utcnow()
        rows = [
            {"platform": platform, "key": key, "payload": payload, "state": InboxState.PENDING, "received_at": now}
            for (platform, key, payload, _), index in zip(batch, range(len(batch)), strict=True)
            if first[(platform, key)] == index
        ]
        statement = (
            insert(InboxItem)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["platform", "key"])
            .returning(InboxItem.id, InboxItem.platform, InboxItem.key)
        )
        async with self.db.session() as s:
            stored = {(platform, key): row_id for row_id, platform, key in (await s.execute(statement)).all()}
        return [
            stored.get((platform, key)) if first[(platform, key)] == index else None
            for index, (platform, key, _, _) in enumerate(batch)
        ]

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
