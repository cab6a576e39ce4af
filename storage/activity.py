"""A post's activity log and its review states.

Every step of a post is logged: who created, edited, regenerated, undid, submitted, approved,
sent back or cancelled it, which turn, when, with a detail (the instruction, the reason). The
review transitions (submit, approve, send back) change the post and log the step in one
transaction. :class:`storage.repository.Store` includes these methods.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import Activity, Thread, ThreadStatus, Turn, User
from storage.rows import found


class PostAction(StrEnum):
    CREATED = "created"
    EDITED = "edited"
    REGENERATED = "regenerated"
    UNDONE = "undone"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    SENT_BACK = "sent_back"
    CANCELLED = "cancelled"


class ActivityEntry(NamedTuple):
    at: datetime
    user_id: int | None
    #: the user's display name, else their platform id ("" for a removed user)
    who: str
    action: PostAction
    turn_id: int | None
    detail: str

    def as_dict(self) -> dict[str, object]:
        """Plain data for manifests and pages."""
        return {
            "at": self.at.isoformat(timespec="seconds"),
            "who": self.who,
            "action": str(self.action),
            "turn_id": self.turn_id,
            "detail": self.detail,
        }


#: states a post may be submitted or approved from (an approved post may go on and be approved again)
_LIVE = (ThreadStatus.OPEN, ThreadStatus.IN_REVIEW, ThreadStatus.APPROVED)


class ReviewStateError(ValueError):
    """The post is not in the state the review step needs (e.g. approving a post not in review)."""


def _entry(thread_id: int, user_id: int | None, action: PostAction, turn_id: int | None, detail: str) -> Activity:
    return Activity(thread_id=thread_id, user_id=user_id, action=action, turn_id=turn_id, detail=detail[:2000])


class ActivityRecords:
    db: Database

    async def log_activity(
        self, thread_id: int, user_id: int | None, action: PostAction, *, turn_id: int | None = None, detail: str = ""
    ) -> None:
        async with self.db.session() as s:
            s.add(_entry(thread_id, user_id, action, turn_id, detail))

    async def activity(self, thread_id: int) -> list[ActivityEntry]:
        """The post's log, oldest first."""
        async with self.db.read() as s:
            rows = (
                await s.execute(
                    select(Activity, User)
                    .outerjoin(User, User.id == Activity.user_id)
                    .where(Activity.thread_id == thread_id)
                    .order_by(Activity.id)
                )
            ).all()
        return [
            ActivityEntry(
                at=row.created_at,
                user_id=row.user_id,
                who=(user.display_name or user.platform_user_id) if user is not None else "",
                action=PostAction(row.action),
                turn_id=row.turn_id,
                detail=row.detail,
            )
            for row, user in rows
        ]

    # -- review ------------------------------------------------------------------------------
    async def submit_for_review(self, thread_id: int, turn_id: int, user_id: int) -> None:
        """The author submits the post's turn: the post is in review until approved or sent back."""
        async with self.db.session() as s:
            thread = await self._open_thread(s, thread_id, *_LIVE)
            thread.status = ThreadStatus.IN_REVIEW
            thread.review_turn_id = turn_id
            s.add(_entry(thread_id, user_id, PostAction.SUBMITTED, turn_id, ""))

    async def approve_turn(self, thread_id: int, turn_id: int, user_id: int) -> None:
        """Approve the turn (a reviewer's or, review off, the author's ✅): the post is approved."""
        async with self.db.session() as s:
            thread = await self._open_thread(s, thread_id, *_LIVE)
            await s.execute(update(Turn).where(Turn.id == turn_id).values(approved=True))
            thread.status = ThreadStatus.APPROVED
            thread.review_turn_id = None
            s.add(_entry(thread_id, user_id, PostAction.APPROVED, turn_id, ""))

    async def send_back(self, thread_id: int, user_id: int, reason: str) -> int | None:
        """A reviewer requests changes: the post is open again. Returns the turn it was about."""
        async with self.db.session() as s:
            thread = await self._open_thread(s, thread_id, ThreadStatus.IN_REVIEW)
            turn_id = thread.review_turn_id
            thread.status = ThreadStatus.OPEN
            thread.review_turn_id = None
            s.add(_entry(thread_id, user_id, PostAction.SENT_BACK, turn_id, reason))
            return turn_id

    @staticmethod
    async def _open_thread(s: AsyncSession, thread_id: int, *allowed: ThreadStatus) -> Thread:
        thread = found(await s.get(Thread, thread_id, with_for_update=True), "thread", thread_id)
        if thread.status not in allowed:
            raise ReviewStateError(f"the post is {str(thread.status).replace('_', ' ')}")
        return thread
