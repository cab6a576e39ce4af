"""The inbox of acknowledged platform callbacks: nothing answered 200 may be lost.

A front end calls :meth:`Inbox.accept` in the step that decides to answer 200: the callback is
stored (one INSERT) unless its key is already there, which makes the row the dedupe key as
well, shared by every process on the database and independent of redis. The front end then
handles the item and calls :meth:`Inbox.done`; a start handles what :meth:`Inbox.pending` still
holds. Done rows are kept for ``retention`` (at least the replay window) and then purged.

Several front ends on one database: each row has an ``owner`` (the front end that accepted or
took it); each front end holds one lease (a row of ``inbox_owners``) that it renews while alive,
one upsert a beat however many rows it holds (:meth:`Inbox.renew`); :meth:`Inbox.take_over` hands
a survivor the unfinished rows of a front end whose lease lapsed, or that let them go on a clean
stop (:meth:`Inbox.release`). A row also carries a lease of its own, written when it is accepted
or taken over and never renewed: it holds the row until the owner's first beat, lets the claim
re-check the row itself, and keeps the rows of a front end that still runs the code before
``inbox_owners`` (migration 0008). A row whose reply could not be sent keeps the messages not sent
(``reply``, the outbox) and stays ``replying`` until :meth:`Inbox.done`; :meth:`Inbox.due` lists
those to try again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.db import Database
from storage.models import InboxItem, InboxOwner, InboxState, utcnow

#: how long a front end's claim on its rows holds without a renewal
DEFAULT_LEASE = timedelta(seconds=15)
#: waits before the 1st, 2nd, ... retry of a reply that could not be sent
RETRY_BACKOFF = (timedelta(seconds=2), timedelta(seconds=5), timedelta(seconds=15), timedelta(seconds=60))
#: the states of a row not finished yet (``IN``, not ``!= done``: the scan stays on the
#: (platform, state) index instead of reading the done rows kept for the replay window)
UNFINISHED = (InboxState.PENDING, InboxState.REPLYING)

#: an accept waiting for its batch: platform, key, payload, and the caller's future (its row id)
_Accept = tuple[str, str, dict[str, Any], asyncio.Future[int | None]]


class Inbox:
    """Writes on the answer path are group-committed: callbacks arriving while a batch is being
    written are stored together in the next transaction (one INSERT for the batch), so 50
    callbacks in flight cost a commit or two, not 50 queued behind SQLite's single writer; done
    marks likewise (one UPDATE). One writer task does both, a batch of each in turn, so in this
    process an accept never waits on the database's lock behind a done mark (SQLite's busy
    handler would let it sleep on, up to 100 ms a try, after the lock is free) but right after it.
    Each caller returns once its own row is committed, or raises if its batch could not be."""

    def __init__(
        self, db: Database, *, max_batch: int = 200, owner: str | None = None, lease: timedelta = DEFAULT_LEASE
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        #: names this front end in the rows it accepts or takes over (None: rows without an owner)
        self.owner = owner
        self.lease = lease
        self._accepts: list[_Accept] = []
        self._dones: list[tuple[int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._accept_sql: Any = None

    async def accept(self, platform: str, key: str, payload: dict[str, Any]) -> int | None:
        """Store a callback; its row id, or None when ``(platform, key)`` is already stored (a repeat).
        Returns once the row is committed; raises when it could not be."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._accepts.append((platform, key, payload, future))
        self._wake_writer()
        return await future

    async def done(self, item_id: int) -> None:
        """Mark a row handled and answered (group-committed like accepts: the marks of rows
        finished together are one UPDATE)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dones.append((item_id, future))
        self._wake_writer()
        await future

    def _wake_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="inbox-writer")

    async def _write(self) -> None:
        """Until nothing waits: a batch of accepts, then a batch of done marks, and again. A batch
        that fails fails its own callers; the next one is tried all the same."""
        while self._accepts or self._dones:
            if self._accepts:
                accepts, self._accepts = self._accepts[: self.max_batch], self._accepts[self.max_batch :]
                futures: list[asyncio.Future[Any]] = [future for *_, future in accepts]
                await _settle(futures, self._insert(accepts))
            if self._dones:
                dones, self._dones = self._dones[: self.max_batch], self._dones[self.max_batch :]
                await _settle([future for _, future in dones], self._mark_done([item_id for item_id, _ in dones]))

    def _accept_statement(self) -> Any:
        """INSERT ... ON CONFLICT (platform, key) DO NOTHING RETURNING id, platform, key, on the
        table (Core, not the ORM): executed with a list of rows it is one cached statement that
        SQLAlchemy sends as multi-row VALUES ("insertmanyvalues"); a statement with the rows in
        its ``values()`` would be compiled anew for every batch (~0.2 ms a row)."""
        if self._accept_sql is None:
            table = InboxItem.__table__
            self._accept_sql = (
                self._insert_into(table)
                .on_conflict_do_nothing(index_elements=["platform", "key"])
                .returning(table.c.id, table.c.platform, table.c.key)
            )
        return self._accept_sql

    def _insert_into(self, table: Any) -> Any:
        """The dialect's INSERT (it has ON CONFLICT)."""
        return (sqlite_insert if self.db.engine.dialect.name == "sqlite" else pg_insert)(table)

    async def _insert(self, batch: list[_Accept]) -> list[int | None]:
        """One INSERT ... ON CONFLICT DO NOTHING RETURNING for the batch, one transaction: the ids
        of the new rows, None for keys already stored (and for a key's second appearance in the
        batch)."""
        first: dict[tuple[str, str], int] = {}
        for index, (platform, key, _, _) in enumerate(batch):
            first.setdefault((platform, key), index)
        now = utcnow()
        lease_until = now + self.lease if self.owner is not None else None
        rows = [
            {
                "platform": platform,
                "key": key,
                "payload": payload,
                "state": InboxState.PENDING,
                "received_at": now,
                "owner": self.owner,
                "lease_until": lease_until,
            }
            for index, (platform, key, payload, _) in enumerate(batch)
            if first[(platform, key)] == index
        ]
        async with self.db.session() as s:
            result = await s.execute(self._accept_statement(), rows)
            stored = {(platform, key): row_id for row_id, platform, key in result.all()}
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

    async def _mark_done(self, item_ids: list[int]) -> list[None]:
        async with self.db.session() as s:
            await s.execute(
                update(InboxItem)
                .where(InboxItem.id.in_(item_ids))
                .values(state=InboxState.DONE, done_at=utcnow(), reply=None, retry_at=None)
            )
        return [None] * len(item_ids)

    async def unsent(self, item_id: int, messages: list[dict[str, Any]]) -> datetime:
        """Keep the messages of a reply that could not be sent (in order); the row stays
        ``replying`` until they are. Returns when the next try is due (a growing backoff)."""
        async with self.db.session() as s:
            item = await s.get(InboxItem, item_id)
            if item is None:
                raise LookupError(f"no inbox item {item_id}")
            attempts = (item.reply_attempts or 0) + 1 if item.state == InboxState.REPLYING else 1
            item.retry_at = utcnow() + RETRY_BACKOFF[min(attempts, len(RETRY_BACKOFF)) - 1]
            item.state, item.reply, item.reply_attempts = InboxState.REPLYING, messages, attempts
            return item.retry_at

    async def due(self, platform: str, *, now: datetime | None = None) -> list[InboxItem]:
        """This front end's rows with a reply to try again now, oldest first."""
        async with self.db.read() as s:
            rows = await s.scalars(
                select(InboxItem)
                .where(
                    InboxItem.platform == platform,
                    InboxItem.state == InboxState.REPLYING,
                    _mine(self.owner),
                    or_(InboxItem.retry_at.is_(None), InboxItem.retry_at <= (now or utcnow())),
                )
                .order_by(InboxItem.id)
            )
            return list(rows)

    async def renew(self, platform: str, *, now: datetime | None = None) -> datetime | None:
        """Extend this front end's lease on its rows of ``platform``: one upsert of its own row of
        ``inbox_owners``, however many rows it holds. Until when it holds (None without an owner)."""
        if self.owner is None:
            return None
        until = (now or utcnow()) + self.lease
        upsert = self._insert_into(InboxOwner.__table__).values(platform=platform, owner=self.owner, lease_until=until)
        upsert = upsert.on_conflict_do_update(
            index_elements=["platform", "owner"], set_={"lease_until": upsert.excluded.lease_until}
        )
        async with self.db.session() as s:
            await s.execute(upsert)
        return until

    async def take_over(self, platform: str, *, own_too: bool = False, now: datetime | None = None) -> list[InboxItem]:
        """Claim the unfinished rows whose front end's lease lapsed (it died) and whose own lease
        (from their accept or last take-over) lapsed too, or that have no owner, oldest first;
        ``own_too`` (on start) also those of this owner's previous run. A read first (a beat
        mostly finds nothing, and on SQLite a write transaction holds off the accepts); then,
        only if it found a row, one UPDATE, which alone decides: a claim writes the row's own
        lease, which the WHERE checks on the row itself, so of two survivors the second finds the
        row held (SQLite: its UPDATE runs after the first one's commit; PostgreSQL: it waits for
        the first one's row lock and re-checks the WHERE on the new row), and no row is taken
        twice."""
        now = now or utcnow()
        if self.owner is None and not own_too:
            return []  # without owners there are no leases to lapse: a start takes everything
        owner_alive = exists().where(
            InboxOwner.platform == InboxItem.platform,
            InboxOwner.owner == InboxItem.owner,
            InboxOwner.lease_until >= now,
        )
        lapsed = and_(or_(InboxItem.lease_until.is_(None), InboxItem.lease_until < now), ~owner_alive)
        if self.owner is not None:
            lapsed = or_(lapsed, InboxItem.owner.is_(None))
            if own_too:
                lapsed = or_(lapsed, InboxItem.owner == self.owner)
        claimable = (InboxItem.platform == platform, InboxItem.state.in_(UNFINISHED), lapsed)
        async with self.db.read() as s:  # most beats find nothing: no write lock for that
            if await s.scalar(select(InboxItem.id).where(*claimable).limit(1)) is None:
                return []
        async with self.db.session() as s:
            rows = await s.scalars(
                update(InboxItem)
                .where(*claimable)
                .values(owner=self.owner, lease_until=now + self.lease if self.owner is not None else None)
                .returning(InboxItem)
                .execution_options(synchronize_session=False)
            )
            return sorted(rows, key=lambda item: item.id)

    async def release(self, platform: str) -> int:
        """A clean stop, once this front end's own handling has finished or been cancelled: drop
        its lease and those of its unfinished rows of ``platform`` (one transaction), so that a
        survivor's next beat takes them instead of waiting for the lease to lapse (a killed front
        end cannot do this: the lapse covers it). Done marks still being written go first: a row
        whose reply went out is not handed on. How many rows it let go; nothing without an owner."""
        if self.owner is None:
            return 0
        while self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])  # it writes until nothing waits
        async with self.db.session() as s:
            await s.execute(delete(InboxOwner).where(InboxOwner.platform == platform, InboxOwner.owner == self.owner))
            result = await s.execute(
                update(InboxItem)
                .where(InboxItem.platform == platform, InboxItem.state.in_(UNFINISHED), _mine(self.owner))
                .values(lease_until=None)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def purge(self, platform: str, older_than: timedelta, *, now: datetime | None = None) -> int:
        """Drop done items received before ``now - older_than``, and the leases of front ends gone
        as long (a missing lease is a lapsed one); how many items went."""
        cutoff = (now or utcnow()) - older_than
        async with self.db.session() as s:
            result = await s.execute(
                delete(InboxItem).where(
                    InboxItem.platform == platform,
                    InboxItem.state == InboxState.DONE,
                    InboxItem.received_at < cutoff,
                )
            )
            await s.execute(delete(InboxOwner).where(InboxOwner.platform == platform, InboxOwner.lease_until < cutoff))
            return int(getattr(result, "rowcount", 0) or 0)


async def _settle(futures: list[asyncio.Future[Any]], write: Coroutine[Any, Any, list[Any]]) -> None:
    """Run one batch's write and hand each caller its result, or the batch's error."""
    try:
        results = await write
    except Exception as exc:
        for future in futures:
            if not future.done():
                future.set_exception(exc)
        return
    for future, result in zip(futures, results, strict=True):
        if not future.done():
            future.set_result(result)


def _mine(owner: str | None) -> Any:
    return InboxItem.owner.is_(None) if owner is None else InboxItem.owner == owner
